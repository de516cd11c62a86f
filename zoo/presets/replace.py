"""Replacing a preset folder: only a preset, and in one step.

`check_target` says whether `save_to_preset` may write to a path: a new
path, an empty folder, or (with `overwrite=True`) a folder holding a
keras-genzoo preset and nothing else. Any other folder is refused untouched,
and a replaced preset is deleted file by file (only a preset's files, by
name), so that no other file is ever deleted.

`os.rename` cannot move a directory onto a non-empty one, and moving the old
one aside first leaves an instant (a crash, a kill) where the path holds
nothing. The kernels have a call that swaps two paths in one step:

- Linux (3.15+): `renameat2(..., RENAME_EXCHANGE)`, on the file systems that
  support it (ext4, XFS, Btrfs, tmpfs, overlayfs, F2FS, ...);
- macOS (10.12+): `renamex_np(..., RENAME_SWAP)`, on APFS.

`replace_directory` uses that swap. Where neither exists (Windows, a file
system without the swap, such as some network mounts) it falls back to
moving the old directory aside under a visible name and the new one in,
moving the old one back if the second step fails: the only case where an
interrupted replacement (a killed process) can leave the path empty, with
the old directory kept beside it under `.NAME.old-*`.

This module uses the standard library only, so that it can be tested in a
bare subprocess that is killed between the steps.
"""

import ctypes
import errno
import json
import os
import platform
import sys
import uuid
import warnings

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
PRESET_FILES = (CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
_RENAME_SWAP = 0x2  # macOS sys/stdio.h
# renameat2's system-call number, for a C library older than glibc 2.28
# (which added the wrapper).
_SYSCALL_RENAMEAT2 = {"x86_64": 316, "amd64": 316, "aarch64": 276, "arm64": 276}
# A kernel or file system without the swap says so with one of these.
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}


class ExchangeUnsupported(OSError):
    """This platform or file system cannot swap two paths in one step."""


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError as error:  # no C library to call (e.g. an embedded build)
        raise ExchangeUnsupported(str(error)) from error


def _check(result, a, b):
    if result == 0:
        return
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        raise ExchangeUnsupported(code, os.strerror(code), a, None, b)
    raise OSError(code, os.strerror(code), a, None, b)


def exchange(a, b):
    """Swaps the paths `a` and `b` (both existing) in one atomic step.

    Raises `ExchangeUnsupported` where the platform or file system has no
    such call; any other failure is an `OSError` and leaves both in place.
    """
    fa, fb = os.fsencode(a), os.fsencode(b)
    if sys.platform.startswith("linux"):
        libc = _libc()
        renameat2 = getattr(libc, "renameat2", None)
        if renameat2 is not None:
            renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                                  ctypes.c_char_p, ctypes.c_uint]
            renameat2.restype = ctypes.c_int
            return _check(renameat2(_AT_FDCWD, fa, _AT_FDCWD, fb, _RENAME_EXCHANGE), a, b)
        number = _SYSCALL_RENAMEAT2.get(platform.machine().lower())
        if number is None:
            raise ExchangeUnsupported(f"renameat2 is unknown on {platform.machine()}")
        libc.syscall.restype = ctypes.c_long
        return _check(libc.syscall(
            ctypes.c_long(number), ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(fa),
            ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(fb), ctypes.c_uint(_RENAME_EXCHANGE),
        ), a, b)
    if sys.platform == "darwin":
        renamex_np = getattr(_libc(), "renamex_np", None)
        if renamex_np is None:
            raise ExchangeUnsupported("renamex_np needs macOS 10.12 or later")
        renamex_np.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        renamex_np.restype = ctypes.c_int
        return _check(renamex_np(fa, fb, _RENAME_SWAP), a, b)
    raise ExchangeUnsupported(f"no atomic directory swap on {sys.platform}")


def _aside(target):
    head, name = os.path.split(target)
    return os.path.join(head, f".{name}.old-{uuid.uuid4().hex[:8]}")


def replace_directory(new, target):
    """Puts the directory `new` at `target`; returns where the old `target`
    now is (a path to delete), or None if there was none.

    With an atomic swap the old directory ends up at `new`'s path; the
    fallback moves it to a hidden `.NAME.old-*` sibling. Both paths must be
    on the same file system (make `new` a sibling of `target`).
    """
    if not os.path.lexists(target):
        os.rename(new, target)
        return None
    try:
        exchange(new, target)
        return new
    except ExchangeUnsupported:
        pass
    # Not atomic: the one window where `target` is missing is between these
    # two renames (the old directory is then at `old`).
    old = _aside(target)
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise
    return old


def interrupted_replacements(target):
    """Old directories that an interrupted fallback replacement of `target`
    left beside it (`.NAME.old-*`), sorted."""
    head, name = os.path.split(os.path.abspath(target))
    try:
        entries = os.listdir(head or ".")
    except OSError:
        return []
    prefix = f".{name}.old-"
    return sorted(os.path.join(head, e) for e in entries if e.startswith(prefix))


def _names(items, limit=5):
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def preset_problem(directory):
    """Why the existing folder `directory` is not a keras-genzoo preset that
    may be replaced, or None if it is one (or is empty)."""
    entries = sorted(os.listdir(directory))
    others = [e for e in entries if e not in PRESET_FILES]
    if others:
        return f"it holds {_names(others)}, which no preset holds"
    for name in entries:
        path = os.path.join(directory, name)
        if os.path.islink(path) or not os.path.isfile(path):
            return f"its {name} is not a regular file"
    if not entries:
        return None
    if METADATA_FILE not in entries:
        return f"it has no {METADATA_FILE}"
    try:
        with open(os.path.join(directory, METADATA_FILE), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError, RecursionError):
        return f"its {METADATA_FILE} is not readable JSON"
    if not (isinstance(meta, dict) and "format_version" in meta and "class_name" in meta):
        return f"its {METADATA_FILE} has no format_version and class_name"
    return None


def check_target(directory, overwrite):
    """Raises ValueError unless a preset may be written at `directory`."""
    if os.path.islink(directory):
        raise ValueError(
            f"`directory` {directory!r} is a symbolic link; save to the "
            "folder it points to, or choose another path."
        )
    if not os.path.exists(directory):
        return
    if not os.path.isdir(directory):
        raise ValueError(
            f"`directory` {directory!r} already exists and is not a folder; "
            "choose another path."
        )
    if not os.listdir(directory):
        return
    if not overwrite:
        raise ValueError(
            f"`directory` {directory!r} already exists; pass overwrite=True "
            "to replace the preset there, or choose another path."
        )
    problem = preset_problem(directory)
    if problem:
        raise ValueError(
            f"`directory` {directory!r} is not a keras-genzoo preset ({problem}): "
            "overwrite=True replaces only a preset, so nothing was changed. "
            "Choose another path, or empty the folder yourself."
        )


def remove_preset(directory):
    """Deletes a replaced preset folder: only the files a preset holds, by
    name, then the folder if that left it empty (else a warning)."""
    for name in PRESET_FILES:
        path = os.path.join(directory, name)
        if os.path.isfile(path) and not os.path.islink(path):
            try:
                os.remove(path)
            except OSError:
                pass
    try:
        os.rmdir(directory)
    except OSError:
        if os.path.isdir(directory):
            warnings.warn(
                f"Kept {directory!r}, the replaced preset's folder: it holds "
                f"files that are not a preset's ({_names(sorted(os.listdir(directory)))}).",
                stacklevel=3,
            )
