"""Files that survive a kill at any moment: written to a temporary name, synced, renamed.

Every writer of a file that is read-modified-written takes `locked(path)` around the whole
change; readers need no lock, since a rename shows them the old file or the new one whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PRIVATE = 0o600

Signature = tuple[int, int, int]
log = logging.getLogger("switchyard")


def write_atomic(path: Path, data: bytes, mode: int = PRIVATE) -> None:
    """Readers see the old file or the new one, never half of either. Each call writes its own
    temporary file, so threads of one process may write the same path at once (the last
    rename wins); a read-modify-write still needs `locked`."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _sweep(path)
    fd, name = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{os.getpid()}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


STALE_AFTER = 60.0  # seconds; a live write holds its temporary file for milliseconds


def _sweep(path: Path) -> None:
    """Removes the temporary files of writers killed mid-write (their pid is gone and the file
    is old: a pid of another pid namespace may look gone), so repeated kills do not pile them
    up beside the file."""
    prefix = _temp_prefix(path)
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
                continue
            pid = entry.name[len(prefix) :].partition(".")[0]
            with contextlib.suppress(OSError):
                if pid.isdigit() and not _alive(int(pid)) and now - entry.stat().st_mtime > STALE_AFTER:
                    os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def keep_private(path: Path) -> None:
    """A file of secrets that others may read (a config written with an editor, a ledger from
    an older version) becomes the owner's alone; a file we may not change is left as it is."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, mode & 0o700 | PRIVATE)
            log.warning("%s was readable by other users; its mode is now %o", path, mode & 0o700 | PRIVATE)
    except OSError:
        pass


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2, sort_keys=False).encode() + b"\n")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An advisory lock beside `path`, so the CLI and a running gateway never interleave a
    read-modify-write of the same file. The lock is on its own file (the data file is replaced
    by each write), is held per open file, so threads of one process exclude each other too,
    and dies with its holder: a killed writer never leaves it taken."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def read(path: Path) -> tuple[bytes, Signature] | None:
    """The file's bytes with the signature of exactly those bytes (taken from the open file,
    so a write that lands between the two cannot pair new bytes with an old signature)."""
    try:
        with open(path, "rb") as f:
            return f.read(), _signature(os.fstat(f.fileno()))
    except FileNotFoundError:
        return None


def signature(path: Path) -> Signature | None:
    """Cheap change detection: (mtime_ns, size, inode), or None when the file is absent."""
    try:
        return _signature(path.stat())
    except FileNotFoundError:
        return None


def _signature(st: os.stat_result) -> Signature:
    return (st.st_mtime_ns, st.st_size, st.st_ino)
