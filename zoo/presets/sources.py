"""Where presets come from: built-in names, local directories, archives.

`locate(source)` returns a local preset directory for:

- a built-in name (`zoo.list_presets()`), shipped in `zoo/presets/builtin/`;
- a local directory holding a preset (a built-in name wins over a
  directory of the same name in the working directory: write `./NAME`);
- a `file://` or `https://` URL of a `.tar`, `.tar.gz`/`.tgz` or `.zip`
  archive of a preset directory. `http://` is accepted only for loopback
  hosts (`127.0.0.1`, `localhost`, `::1`), for tests and local mirrors.

Archives are downloaded once into `$KERAS_HOME/zoo_presets/` (`~/.keras`
without `KERAS_HOME`), one folder per URL, and unpacked there; later loads
use the cache. An expected sha256 of the archive, given as
`from_preset(url, sha256=...)` or as a URL fragment `...#sha256=<hex>`, is
checked before the archive is unpacked: on a mismatch the download is
deleted and the error says so. Every preset's files are then checked against
the sha256 recorded in its metadata.json, whatever the source. Archive
members with absolute paths, `..`, links or device files are refused.
"""

import difflib
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile

from zoo.presets.format import CONFIG_FILE, PresetError, sha256_of

BUILTIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "builtin")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


def builtin_names():
    """Names of the presets shipped in the package, sorted."""
    if not os.path.isdir(BUILTIN_DIR):
        return []
    return sorted(
        name for name in os.listdir(BUILTIN_DIR)
        if os.path.isfile(os.path.join(BUILTIN_DIR, name, CONFIG_FILE))
    )


def cache_dir():
    """`$KERAS_HOME/zoo_presets`, or `~/.keras/zoo_presets`."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "zoo_presets")


def _split_sha256(url, sha256):
    parsed = urllib.parse.urlsplit(url)
    fragment = urllib.parse.parse_qs(parsed.fragment)
    if "sha256" in fragment:
        from_url = fragment["sha256"][0].lower()
        if sha256 is not None and sha256.lower() != from_url:
            raise ValueError(
                f"`sha256` ({sha256}) differs from the URL's #sha256= ({from_url})."
            )
        sha256 = from_url
    if sha256 is not None:
        sha256 = str(sha256).lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(
                f"`sha256` must be 64 hexadecimal digits; received {sha256!r}."
            )
    return urllib.parse.urlunsplit(parsed._replace(fragment="")), sha256


def _archive_suffix(path):
    lower = path.lower()
    for suffix in sorted(_ARCHIVE_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return suffix
    raise ValueError(
        f"A preset URL must name a {', '.join(_ARCHIVE_SUFFIXES)} archive; "
        f"received {path!r}."
    )


def locate(source, sha256=None):
    """A local preset directory for `source`; see the module doc."""
    if not isinstance(source, (str, os.PathLike)) or not os.fspath(source):
        raise ValueError(
            "The preset must be a built-in name, a directory or a file:// or "
            f"https:// URL of an archive; received {source!r}."
        )
    source = os.fspath(source)
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme in ("file", "http", "https"):
        return _fetch(source, sha256)
    if sha256 is not None:
        raise ValueError("`sha256` checks a downloaded archive; it needs a URL source.")
    if scheme and len(scheme) > 1:  # "c:" is a Windows drive, not a scheme
        raise ValueError(
            f"Unsupported URL scheme {scheme!r} in {source!r}: use file://, "
            "https:// (or http:// on 127.0.0.1)."
        )
    names = builtin_names()
    if source in names:
        return os.path.join(BUILTIN_DIR, source)
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        return os.path.abspath(path)
    if os.path.exists(path):
        raise PresetError(
            f"{source!r} is a file, not a preset directory; pass archives as "
            "file:// URLs."
        )
    looks_like_path = os.sep in source or source.startswith((".", "~"))
    if looks_like_path:
        raise PresetError(f"No preset directory at {source!r}.")
    close = difflib.get_close_matches(source, names, n=3, cutoff=0.4)
    hint = f" Closest: {', '.join(close)}." if close else ""
    raise PresetError(
        f"Unknown preset {source!r}.{hint} Built-in presets: "
        f"{', '.join(names) or 'none'} (zoo.list_presets())."
    )


def _fetch(url, sha256):
    url, sha256 = _split_sha256(url, sha256)
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme.lower()
    if scheme == "http" and parsed.hostname not in _LOOPBACK:
        raise ValueError(
            f"Plain http:// is accepted only for {', '.join(_LOOPBACK)}; use "
            f"https:// for {parsed.hostname!r}. Received {url!r}."
        )
    suffix = _archive_suffix(parsed.path)
    if scheme == "file":
        local = urllib.request.url2pathname(parsed.path)
        if not os.path.isfile(local):
            raise PresetError(f"No archive at {url!r} (looked for {local!r}).")
    key = hashlib.sha256(url.encode()).hexdigest()[:24]
    folder = os.path.join(cache_dir(), key)
    archive = os.path.join(folder, "archive" + suffix)
    unpacked = os.path.join(folder, "preset")
    os.makedirs(folder, exist_ok=True)

    if not os.path.isfile(archive):
        tmp = f"{archive}.part-{os.getpid()}"
        try:
            _download(url, tmp)
            os.replace(tmp, archive)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    if sha256 is not None:
        actual = sha256_of(archive)
        if actual != sha256:
            shutil.rmtree(folder, ignore_errors=True)
            raise PresetError(
                f"The archive downloaded from {url!r} has sha256 {actual}, "
                f"expected {sha256}; the download was deleted "
                f"({folder!r}). Check the URL and the hash."
            )
    if not os.path.isdir(unpacked):
        tmp = tempfile.mkdtemp(prefix="unpack-", dir=folder)
        try:
            _unpack(archive, tmp, url)
            root = _preset_root(tmp, url)
            try:
                os.rename(root, unpacked)
            except OSError:
                if not os.path.isdir(unpacked):  # else another process won the race
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return unpacked


def _download(url, path):
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as f:
            shutil.copyfileobj(response, f)
    except OSError as error:
        raise PresetError(f"Could not download the preset {url!r}: {error}") from error


def _unpack(archive, target, url):
    target = os.path.realpath(target)

    def check(name):
        full = os.path.realpath(os.path.join(target, name))
        if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/") or not (
            full == target or full.startswith(target + os.sep)
        ):
            raise PresetError(f"The archive {url!r} holds an unsafe path {name!r}.")

    try:
        if archive.endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    check(info.filename)
                    # The high bits of external_attr hold the Unix mode.
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise PresetError(
                            f"The archive {url!r} holds a link {info.filename!r}."
                        )
                z.extractall(target)
        else:
            with tarfile.open(archive) as t:
                members = t.getmembers()
                for m in members:
                    check(m.name)
                    if not (m.isfile() or m.isdir()):
                        raise PresetError(
                            f"The archive {url!r} holds {m.name!r}, which is not "
                            "a plain file or directory."
                        )
                t.extractall(target, members=members, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as error:
        raise PresetError(
            f"The archive from {url!r} is damaged or not a tar/zip file: {error}"
        ) from error


def _preset_root(tmp, url):
    """The folder of the unpacked archive that holds config.json."""
    if os.path.isfile(os.path.join(tmp, CONFIG_FILE)):
        return tmp
    entries = [e for e in os.listdir(tmp) if not e.startswith(".")]
    if len(entries) == 1 and os.path.isfile(os.path.join(tmp, entries[0], CONFIG_FILE)):
        return os.path.join(tmp, entries[0])
    raise PresetError(
        f"The archive {url!r} holds no preset: expected {CONFIG_FILE} at its "
        "top level or inside one top-level folder."
    )
