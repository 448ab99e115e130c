"""Local landing files, opened safely: no symbolic links out of the landing root, no special
files, and one open file description for everything read (hint, hash, parse).

- A symbolic link (the file itself, or a folder on its path below the landing root) is refused
  unless ``data.follow_symlinks``; then it is read only when its target resolves inside the
  landing root (``data.landing`` when the file is under it, else the file's own folder). The
  refusal happens before the link is opened, so nothing of its target is read.
- FIFOs, sockets and devices are refused without being opened (a FIFO would block the reader).
- The file is opened once (``O_NOFOLLOW``, ``O_NONBLOCK``) and checked with ``fstat``; the
  readers (polars, the hasher) read that same file through ``/proc/self/fd/N`` where the system
  has it, so a path swapped for a link after the check is not followed.
- `LocalFile.check_unchanged` compares size and modification time with those at the open: a
  file written to while it was read is not committed (`FileChanged`, outcome ``retry``).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import weakref
from dataclasses import dataclass, field

from cnnlstm.formats.base import FileRejected

PROC_FD = os.path.isdir("/proc/self/fd")


class FileChanged(Exception):
    """The file changed while it was being read: nothing is committed; ingest it again once
    its writer is done. Not a verdict on its content."""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def static_prefix(pattern: str) -> str:
    """The folder part of a path or glob before its first wildcard component."""
    parts = pattern.split(os.sep)
    keep = []
    for p in parts:
        if re.search(r"[*?\[]", p):
            break
        keep.append(p)
    return os.sep.join(keep) or os.sep


def landing_root(landing: str | None, path: str) -> str | None:
    """The landing root that holds ``path`` (absolute, not resolved), or None when ``landing``
    is unset or ``path`` is not under it."""
    if not landing or "://" in landing:
        return None
    root = os.path.abspath(static_prefix(landing))
    if not os.path.isdir(root):
        root = os.path.dirname(root)
    ap = os.path.abspath(path)
    return root if ap.startswith(root.rstrip(os.sep) + os.sep) else None


def _links_below(root: str | None, ap: str) -> list[str]:
    """The components of ``ap`` below ``root`` (or only ``ap`` itself) that are links."""
    if root is None:
        comps = [ap]
    else:
        rel = os.path.relpath(ap, root).split(os.sep)
        comps = [os.path.join(root, *rel[: i + 1]) for i in range(len(rel))]
    return [c for c in comps if os.path.islink(c)]


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def check_local(path: str, landing: str | None, follow_symlinks: bool) -> str:
    """The path to open for landing file ``path`` after the link and file-type policy (the
    resolved target when a link is followed). Raises FileRejected with the reason; never opens
    anything."""
    ap = os.path.abspath(path)
    try:
        lst = os.lstat(ap)
    except OSError as e:
        raise FileRejected(f"cannot read file: {e.strerror or e}") from e
    root = landing_root(landing, ap)
    links = _links_below(root, ap)
    target = ap
    if links:
        if not follow_symlinks:
            what = "symbolic link" if links == [ap] else "a folder on its path is a symbolic link"
            raise FileRejected(
                f"{what}: not followed (data.follow_symlinks is false; set it to read links "
                "whose target is inside the landing root)"
            )
        real_root = os.path.realpath(root or os.path.dirname(ap))
        target = os.path.realpath(ap)
        if not _inside(target, real_root):
            raise FileRejected(
                "symbolic link resolves outside the landing root "
                f"{root or os.path.dirname(ap)}: not followed (data.follow_symlinks only "
                "follows links to targets inside it)"
            )
        try:
            lst = os.lstat(target)
        except OSError as e:
            raise FileRejected(f"cannot read file: broken symbolic link ({e.strerror})") from e
    if not stat.S_ISREG(lst.st_mode):
        raise FileRejected(f"not a regular file: {_kind(lst.st_mode)}; only regular files are read")
    return target


@dataclass(eq=False)
class LocalFile:
    """A landing file opened for reading; closed when this object is dropped (or by close)."""

    path: str  # as given
    fd: int
    st: os.stat_result
    _closer: weakref.finalize = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._closer = weakref.finalize(self, os.close, self.fd)

    @property
    def size(self) -> int:
        return self.st.st_size

    @property
    def reader_path(self) -> str:
        """A path that opens this same file (not whatever the path names by now)."""
        return f"/proc/self/fd/{self.fd}" if PROC_FD else self.path

    def read_all(self) -> bytes:
        """The file's first `size` bytes (its size when it was opened)."""
        with open(os.dup(self.fd), "rb") as f:  # a buffered read(n): one allocation
            f.seek(0)
            data = f.read(self.size)
        if len(data) != self.size:
            raise FileChanged(
                f"file changed while being read (shrank from {self.size} to {len(data)} bytes); "
                "not committed: ingest it again once it is complete"
            )
        return data

    def head(self, n: int) -> bytes:
        """The file's first ``n`` bytes (fewer in a shorter file)."""
        with open(os.dup(self.fd), "rb") as f:
            f.seek(0)
            return f.read(n)

    def check_unchanged(self) -> None:
        """Raise FileChanged when the size or modification time differs from the open's."""
        now = os.fstat(self.fd)
        if (now.st_size, now.st_mtime_ns) != (self.st.st_size, self.st.st_mtime_ns):
            raise FileChanged(
                "file changed while being read (size "
                f"{self.st.st_size} -> {now.st_size} bytes, mtime changed: "
                f"{now.st_mtime_ns != self.st.st_mtime_ns}); not committed: ingest it again "
                "once it is complete"
            )

    def close(self) -> None:
        self._closer()


def open_local(path: str, landing: str | None, follow_symlinks: bool) -> LocalFile:
    """Open landing file ``path`` after `check_local`. Raises FileRejected."""
    target = check_local(path, landing, follow_symlinks)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:  # swapped for a link after the check
            raise FileRejected("symbolic link: not followed (data.follow_symlinks)") from e
        raise FileRejected(f"cannot read file: {e.strerror or e}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRejected(
                f"not a regular file: {_kind(st.st_mode)}; only regular files are read"
            )
    except BaseException:
        os.close(fd)
        raise
    return LocalFile(path, fd, st)


def local_path(source: str) -> str:
    """A local source as a file-system path (``file://`` removed)."""
    return source[len("file://") :] if source.startswith("file://") else source
