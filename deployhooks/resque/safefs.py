"""Files that root touches on behalf of an app, without trusting the app's owner.

The monit wrapper runs as root; the deploy user owns ``/data/<app>`` and everything under
``shared/``. Three rules keep root from being steered by that user:

- Files root creates (locks, pidfiles and their temporary files) live in a *trusted* folder: one
  that only root (or, when not run as root, the running user) can change, and whose every
  ancestor only they can change too. :func:`check_trusted_dir` walks the path the way the kernel
  resolves it, symlinks included, so ``/var/run -> /run`` is fine and a link the deploy user could
  re-point is not.
- Inside it, files are created exclusively (``O_EXCL`` through :func:`tempfile.mkstemp`) and
  renamed into place (:func:`write_atomic`), or opened with ``O_NOFOLLOW`` (:func:`open_lock`).
- A file in a folder the deploy user controls is appended to by root only when it is a regular
  file, owned by that user, with one link, opened without following a symlink
  (:func:`open_append_owned`): root then writes nothing the user could not write themselves.
"""

from __future__ import annotations

import os
import stat
import tempfile

__all__ = [
    "UnsafePath",
    "check_trusted_dir",
    "ensure_trusted_dir",
    "open_append_owned",
    "open_lock",
    "write_atomic",
    "trusted_owners",
]

_MAX_LINKS = 40  # Linux's own limit on symlinks followed in one path lookup (ELOOP)


class UnsafePath(Exception):
    """A path root was asked to use could be changed by someone else; the message says how."""


def trusted_owners() -> tuple[int, ...]:
    """The uids allowed to own a trusted folder: root, and the running user when not root."""
    euid = os.geteuid()
    return (0,) if euid == 0 else (0, euid)


def _check_folder(path: str, st: os.stat_result, *, last: bool, owners: tuple[int, ...]) -> None:
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{path} is not a folder")
    if st.st_uid not in owners:
        raise UnsafePath(f"{path} is owned by uid {st.st_uid}, not root")
    if st.st_mode & 0o022:
        # A sticky ancestor (/tmp) lets others add entries but not rename or remove ours; the
        # folder itself must not let anyone else add a file or a link beside ours.
        if last or not st.st_mode & stat.S_ISVTX:
            raise UnsafePath(f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})")


def check_trusted_dir(path: str, owners: tuple[int, ...] | None = None) -> str:
    """Return `path` resolved, or raise UnsafePath unless only `owners` can change what it names.

    Every folder met while resolving `path` (symlinks followed as the kernel does) must be owned
    by one of `owners` (default :func:`trusted_owners`) and not group/other-writable; an ancestor
    may be world-writable if it is sticky. A symlink is trusted because the folder holding it is.
    FileNotFoundError if a component is missing.
    """
    owners = trusted_owners() if owners is None else owners
    pending = [part for part in os.path.abspath(path).split("/") if part]
    current = "/"
    _check_folder("/", os.lstat("/"), last=not pending, owners=owners)
    links = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, part)
        st = os.lstat(candidate)
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_LINKS:
                raise UnsafePath(f"{path}: too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = "/"
            pending = [p for p in target.split("/") if p] + pending
            continue
        _check_folder(candidate, st, last=not pending, owners=owners)
        current = candidate
    return current


def ensure_trusted_dir(path: str, mode: int = 0o755) -> str:
    """Create `path` (and missing parents) if needed, then :func:`check_trusted_dir` it."""
    try:
        return check_trusted_dir(path)
    except FileNotFoundError:
        pass
    os.makedirs(path, mode=mode, exist_ok=True)
    return check_trusted_dir(path)


def open_lock(path: str) -> int:
    """Open (creating) a lock file for read/write without following a symlink at its name."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data`: a temporary file created exclusively beside it, synced, then
    renamed over it, so a reader never sees half a file and no link is written through."""
    folder, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=folder or ".", prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def open_append_owned(path: str, uid: int, *, create: bool = False) -> int | None:
    """An fd appending to `path` if it is a regular file owned by `uid` with one link, opened
    without following a symlink at its name; else None (and nothing written or created).

    With `create`, a missing file is created (mode 0644): only safe when the caller already runs
    as `uid`, or in a trusted folder.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
    if create:
        flags |= os.O_CREAT
    try:
        fd = os.open(path, flags, 0o644)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != uid or st.st_nlink != 1:
        os.close(fd)
        return None
    os.set_blocking(fd, True)
    return fd
