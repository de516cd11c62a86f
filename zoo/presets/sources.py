"""Where presets come from: built-in names, local folders, archives, the Hub.

`resolve(source)` (and `locate`, for zoo presets) finds:

- a built-in name (`zoo.list_presets()`), shipped in `zoo/presets/builtin/`;
- a local folder holding a preset (a built-in name wins over a folder of
  the same name in the working directory: write `./NAME`);
- a local folder holding a Hugging Face checkpoint (a transformers
  `config.json` with a `model_type`, and no `metadata.json`), and
  `hf://owner/name` on the Hugging Face Hub: `zoo.from_preset` converts them
  on load through `zoo.presets.huggingface`;
- a `file://` or `https://` URL of a `.tar`, `.tar.gz`/`.tgz` or `.zip`
  archive of a preset folder. `http://` is accepted only for loopback hosts
  (`127.0.0.1`, `localhost`, `::1`), for tests and local mirrors, and every
  redirect is held to the same rule (nor may a remote host redirect to a
  loopback one).

Archives are unpacked into a cache under `$KERAS_HOME/zoo_presets/`
(`~/.keras` without `KERAS_HOME`):

```
zoo_presets/
  archives/<sha256 of the archive>/  one verified, unpacked preset per content
  sources/<sha256 of the URL>.json   what an https:// URL served last
                                     (its sha256, ETag, Last-Modified)
  .tmp-*                             work in progress, never loaded
```

Nothing enters the cache unverified: the download's size against the
server's Content-Length, the archive's sha256 against the expected one
(`from_preset(url, sha256=...)` or a URL fragment `#sha256=<hex>`, either
case), extraction within its limits, and the unpacked files against the
sha256 in the preset's metadata.json. A failed check leaves the cache as it
was and says so. Because entries are keyed by content, a changed source is
noticed: a `file://` archive is hashed on every load; an `https://` URL with
an expected sha256 is served from the cache without a request; one without
is revalidated on every load (a conditional request: a 304 keeps the cached
copy; if the server cannot be reached, the last verified copy is used, with
a warning).

Archive members with absolute paths, `..`, links or device files are
refused, and so is an archive of more than `MAX_MEMBERS` members or one
that would expand to more than `max(256 MiB, 50 x its own size)` (set
`ZOO_PRESET_MAX_EXTRACT_BYTES` to another number of bytes to change that).
"""

import difflib
import hashlib
import http.client
import importlib
import ipaddress
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile

from zoo.presets.format import (
    CONFIG_FILE,
    METADATA_FILE,
    PresetError,
    check_metadata,
    describe,
    read_metadata,
    sha256_of,
    verify_files,
)
from zoo.presets.replace import interrupted_replacements

BUILTIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "builtin")
HF_MODULE = "zoo.presets.huggingface"
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
MAX_MEMBERS = 1000
MAX_EXTRACT_ENV = "ZOO_PRESET_MAX_EXTRACT_BYTES"
# Weights barely compress, so a real preset expands to about its archive's
# size; a bomb expands thousands of times.
_MIN_EXTRACT_LIMIT = 256 << 20
_EXTRACT_RATIO = 50


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


def huggingface(source=None):
    """The `zoo.presets.huggingface` module, imported on first use; None if
    it is absent, or a `PresetError` if `source` needs it."""
    try:
        return importlib.import_module(HF_MODULE)
    except ModuleNotFoundError as error:
        if error.name != HF_MODULE:
            raise
        if source is None:
            return None
        raise PresetError(
            f"{source!r} is a Hugging Face checkpoint, but this installation of "
            f"keras-genzoo has no {HF_MODULE} to convert it."
        ) from None


def is_hf_checkpoint(directory):
    """Whether the folder holds a Hugging Face checkpoint (not a zoo preset)."""
    if os.path.isfile(os.path.join(directory, METADATA_FILE)):
        return False
    module = huggingface()
    return module is not None and bool(module.is_hf_checkpoint(directory))


def resolve(source, sha256=None):
    """`("zoo", directory)` or `("huggingface", source)`; see the module doc.

    For Hugging Face sources, `source` is the local folder's absolute path
    or the `hf://` string, for `zoo.presets.huggingface.load_hf_checkpoint`.
    """
    if not isinstance(source, (str, os.PathLike)) or not os.fspath(source):
        raise ValueError(
            "The preset must be a built-in name, a directory, a file:// or "
            f"https:// URL of an archive, or hf://owner/name; received {source!r}."
        )
    source = os.fspath(source)
    scheme = urllib.parse.urlsplit(source).scheme.lower()
    if scheme in ("file", "http", "https"):
        return "zoo", _fetch(source, sha256)
    if sha256 is not None:
        raise ValueError("`sha256` checks a downloaded archive; it needs a file:// or https:// URL.")
    if scheme == "hf":
        huggingface(source)
        return "huggingface", source
    if scheme and len(scheme) > 1:  # "c:" is a Windows drive, not a scheme
        raise ValueError(
            f"Unsupported URL scheme {scheme!r} in {source!r}: use file://, "
            "https:// (or http:// on 127.0.0.1), or hf://."
        )
    names = builtin_names()
    if source in names:
        return "zoo", os.path.join(BUILTIN_DIR, source)
    path = os.path.abspath(os.path.expanduser(source))
    if os.path.isdir(path):
        if is_hf_checkpoint(path):
            return "huggingface", path
        return "zoo", path
    if os.path.exists(path):
        raise PresetError(
            f"{source!r} is a file, not a preset directory; pass archives as "
            "file:// URLs."
        )
    left = interrupted_replacements(path)
    if left:
        raise PresetError(
            f"No preset directory at {path!r}: an interrupted replacement left "
            f"the previous preset at {left[-1]!r}; rename it back to load it."
        )
    if os.sep in source or source.startswith((".", "~")) or "/" in source:
        hint = (f" For the Hugging Face Hub write 'hf://{source}'."
                if source.count("/") == 1 and not source.startswith((".", "~", "/")) else "")
        raise PresetError(f"No preset directory at {source!r} ({path!r}).{hint}")
    close = difflib.get_close_matches(source, names, n=3, cutoff=0.4)
    hint = f" Closest: {', '.join(close)}." if close else ""
    raise PresetError(
        f"Unknown preset {source!r}.{hint} Looked for a built-in preset of that "
        f"name ({', '.join(names) or 'none'}; see zoo.list_presets()), a folder "
        f"{path!r} (relative to the working directory: none), and a download "
        f"in the cache {cache_dir()!r} (it holds archives by URL only: pass "
        "the preset's file://, https:// or hf:// URL)."
    )


def locate(source, sha256=None):
    """The local directory of `source`: a zoo preset's (see the module doc),
    or a local Hugging Face checkpoint folder's own path."""
    kind, where = resolve(source, sha256)
    if kind == "huggingface" and not os.path.isdir(where):
        raise PresetError(
            f"{source!r} is a Hugging Face Hub checkpoint, converted when loaded: "
            f"use zoo.from_preset({source!r}); it has no local preset directory."
        )
    return where


# ---------------------------------------------------------------------------
# URL sources and the cache.


def _split_sha256(url, sha256):
    parsed = urllib.parse.urlsplit(url)
    fragment = urllib.parse.parse_qs(parsed.fragment)
    if "sha256" in fragment:
        from_url = fragment["sha256"][0].lower()
        if sha256 is not None and str(sha256).lower() != from_url:
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


def _is_loopback(host):
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url, redirected_from=None):
    """Refuses plain http:// except on loopback, and a redirect from a
    remote host to a loopback one."""
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme.lower()
    via = f" (redirected from {redirected_from!r})" if redirected_from else ""
    if redirected_from and scheme not in ("http", "https"):
        raise PresetError(f"Refused a redirect to {url!r}{via}: only https:// is followed.")
    if scheme == "http" and not _is_loopback(parsed.hostname):
        raise PresetError(
            f"Plain http:// is accepted only for loopback hosts (127.0.0.1, "
            f"localhost, ::1); use https:// for {parsed.hostname!r}. Refused "
            f"{url!r}{via}."
        )
    if redirected_from and _is_loopback(parsed.hostname) and not _is_loopback(
        urllib.parse.urlsplit(redirected_from).hostname
    ):
        raise PresetError(f"Refused a redirect from a remote host to a loopback one: {url!r}{via}.")


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_url(newurl, redirected_from=req.full_url)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Unreachable(PresetError):
    """The server could not be reached (as opposed to an answer it gave)."""


def _entry(digest):
    return os.path.join(cache_dir(), "archives", digest)


def _record_path(url):
    return os.path.join(cache_dir(), "sources", hashlib.sha256(url.encode()).hexdigest() + ".json")


def _read_record(url):
    try:
        with open(_record_path(url)) as f:
            record = json.load(f)
        return record if record.get("url") == url and os.path.isdir(_entry(record["sha256"])) else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # no usable record: download afresh


def _write_record(url, record):
    path = _record_path(url)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"url": url, **record}, f)
    os.replace(tmp, path)


def _fetch(url, sha256):
    url, sha256 = _split_sha256(url, sha256)
    parsed = urllib.parse.urlsplit(url)
    check_url(url)
    suffix = _archive_suffix(parsed.path)
    if parsed.scheme.lower() == "file":
        local = urllib.request.url2pathname(parsed.path)
        if not os.path.isfile(local):
            raise PresetError(f"No archive at {url!r} (looked for {local!r}).")
        # Hashed on every load: a rewritten archive gets its own entry.
        digest = sha256_of(local)
        _check_sha256(url, digest, sha256)
        return _add(local, suffix, digest, url)
    if sha256 is not None and os.path.isdir(_entry(sha256)):
        return _entry(sha256)  # pinned content: nothing to ask the server
    record = _read_record(url) if sha256 is None else None
    os.makedirs(cache_dir(), exist_ok=True)
    work = tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir())
    try:
        archive = os.path.join(work, "archive" + suffix)
        try:
            validators = _download(url, archive, record)
        except _Unreachable as error:
            if record is None:
                raise
            warnings.warn(
                f"{error} Using the copy downloaded earlier ({_entry(record['sha256'])}).",
                stacklevel=4,
            )
            return _entry(record["sha256"])
        if validators is None:  # 304 Not Modified
            return _entry(record["sha256"])
        digest = sha256_of(archive)
        _check_sha256(url, digest, sha256)
        entry = _add(archive, suffix, digest, url)
        _write_record(url, {"sha256": digest, **validators})
        return entry
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_sha256(url, actual, expected):
    if expected is not None and actual != expected:
        raise PresetError(
            f"The archive {url!r} has sha256 {actual}, expected {expected}; "
            "nothing was cached. Check the URL and the hash."
        )


def _download(url, path, record):
    """Downloads `url` to `path`; returns its validators (ETag,
    Last-Modified), or None when `record`'s copy is still current."""
    request = urllib.request.Request(url)
    if record is not None:
        if record.get("etag"):
            request.add_header("If-None-Match", record["etag"])
        if record.get("last_modified"):
            request.add_header("If-Modified-Since", record["last_modified"])
    opener = urllib.request.build_opener(_CheckedRedirects)
    try:
        with opener.open(request, timeout=60) as response, open(path, "wb") as f:
            shutil.copyfileobj(response, f)
            headers = response.headers
    except urllib.error.HTTPError as error:
        if error.code == 304 and record is not None:
            return None
        raise PresetError(f"Could not download the preset {url!r}: {describe(error)}") from error
    except (OSError, http.client.HTTPException) as error:
        raise _Unreachable(f"Could not download the preset {url!r}: {describe(error)}") from error
    size, announced = os.path.getsize(path), headers.get("Content-Length")
    if announced is not None and not headers.get("Content-Encoding"):
        if not announced.strip().isdigit() or int(announced) != size:
            raise PresetError(
                f"The download of {url!r} is incomplete: {size} bytes arrived, the "
                f"server announced {announced}; nothing was cached. Try again."
            )
    return {"etag": headers.get("ETag"), "last_modified": headers.get("Last-Modified")}


def _add(archive, suffix, digest, url):
    """The cache entry of `archive` (of sha256 `digest`), unpacked and
    verified first if it is new; nothing enters the cache on a failure."""
    entry = _entry(digest)
    if os.path.isdir(entry):
        return entry
    os.makedirs(os.path.dirname(entry), exist_ok=True)
    work = tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir())
    try:
        unpacked = os.path.join(work, "unpacked")
        _unpack(archive, suffix, unpacked, url)
        root = _preset_root(unpacked, url)
        try:
            meta = read_metadata(root)
            check_metadata(root, meta)
            verify_files(root, meta)
        except PresetError as error:
            raise PresetError(
                f"The archive {url!r} holds a broken preset, so it was not cached: {error}"
            ) from None
        try:
            os.rename(root, entry)
        except OSError:
            if not os.path.isdir(entry):  # else another process won the race
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return entry


def extract_limit(archive_size):
    """Bytes an archive of `archive_size` bytes may expand to."""
    value = os.environ.get(MAX_EXTRACT_ENV)
    if value:
        if not value.strip().isdigit() or int(value) <= 0:
            raise ValueError(
                f"{MAX_EXTRACT_ENV} must be a positive number of bytes; received {value!r}."
            )
        return int(value)
    return max(_MIN_EXTRACT_LIMIT, _EXTRACT_RATIO * archive_size)


def _unpack(archive, suffix, target, url):
    os.makedirs(target)
    target = os.path.realpath(target)
    limit = extract_limit(os.path.getsize(archive))
    count, total = 0, 0

    def check(name, size):
        nonlocal count, total
        full = os.path.realpath(os.path.join(target, name))
        if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/") or not (
            full == target or full.startswith(target + os.sep)
        ):
            raise PresetError(f"The archive {url!r} holds an unsafe path {name!r}.")
        # Sizes are checked before anything is written: tarfile writes
        # exactly a member's declared size, zipfile at most its file_size.
        count, total = count + 1, total + size
        if count > MAX_MEMBERS:
            raise PresetError(
                f"The archive {url!r} holds more than {MAX_MEMBERS} members; a "
                "preset holds three files. Nothing was extracted."
            )
        if total > limit:
            raise PresetError(
                f"The archive {url!r} ({os.path.getsize(archive)} bytes) would "
                f"expand to more than {limit} bytes, the limit for its size; "
                f"nothing was extracted. If it is a real preset, set "
                f"{MAX_EXTRACT_ENV} to a larger number of bytes."
            )

    try:
        if suffix == ".zip":
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    check(info.filename, info.file_size)
                    # The high bits of external_attr hold the Unix mode.
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise PresetError(
                            f"The archive {url!r} holds a link {info.filename!r}."
                        )
                z.extractall(target)
        else:
            with tarfile.open(archive) as t:
                members = []
                for m in t:  # one by one, so a flood of members stops early
                    check(m.name, m.size)
                    if not (m.isfile() or m.isdir()):
                        raise PresetError(
                            f"The archive {url!r} holds {m.name!r}, which is not "
                            "a plain file or directory."
                        )
                    members.append(m)
                t.extractall(target, members=members, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as error:
        raise PresetError(
            f"The archive from {url!r} is damaged or not a tar/zip file: {describe(error)}"
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
