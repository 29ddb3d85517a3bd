"""Atomic file writes (a temporary file beside the target, then a rename), the run directory's lock, run-state
errors and notes.

A write that fails for a reason of the environment (permissions, a read-only file system, a full disk) is
one :class:`WriteError` naming the file, never a raw ``OSError`` traceback; the target is left as it was.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from .errors import WriteError

# errno values that are the environment's doing (not a bug): reported as one line naming the path
ENVIRONMENT_ERRNOS = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                      errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on the disk",
                      errno.EDQUOT: "disk quota exceeded"}
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
#: Something not kdframe's own where it writes: a file where a folder goes, a folder where a file goes, a symlink loop.
IN_THE_WAY = {errno.EEXIST: "a file is in the way of a folder", errno.ENOTDIR: "a file is in the way of a folder",
              errno.EISDIR: "a folder is in the way of a file", errno.ELOOP: "a symlink loop is in the way"}


def write_error(path: str | os.PathLike, exc: OSError) -> WriteError:
    """One message naming ``path``, why it cannot be written and what to do."""
    why = ENVIRONMENT_ERRNOS.get(exc.errno) or IN_THE_WAY.get(exc.errno) or exc.strerror or str(exc)
    if exc.errno in IN_THE_WAY:
        todo = "move that out of the way (kdframe keeps its own files and folders there), or use another run_dir"
    elif exc.errno in FULL_DISK:
        todo = "free some space, then run the same command again (finished work is kept)"
    else:
        todo = "make it writable or write elsewhere (e.g. another run_dir)"
    return WriteError(f"{path}: cannot write ({why}); {todo}")


def is_environment_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS


def _cannot_write(exc: BaseException) -> bool:
    """The environment, or something in the way (:data:`IN_THE_WAY`): one message, not a traceback."""
    return is_environment_error(exc) or (isinstance(exc, OSError) and exc.errno in IN_THE_WAY)


def _new_file_mode() -> int:
    """What ``open(path, "w")`` would give a new file: 0666 less the process's umask (read by setting it back)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def make_dir(path: str | os.PathLike) -> None:
    """``mkdir -p``; a folder that cannot be made is a :class:`WriteError` naming it."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if not _cannot_write(exc):
            raise
        raise write_error(exc.filename if exc.errno in IN_THE_WAY and exc.filename else path, exc) from None


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary binary file and rename it over ``path`` only if it succeeds.

    Permission, read-only and full-disk failures are a :class:`WriteError` naming ``path`` (or its folder);
    ``path`` is then unchanged and no temporary file is left behind.
    """
    path = Path(path)
    make_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        if not is_environment_error(exc):
            raise
        raise write_error(path, exc) from None
    try:
        os.fchmod(fd, _new_file_mode())  # mkstemp makes 0600; a file written in place would follow the umask
        with os.fdopen(fd, "w+b") as f:  # h5py reads back what it wrote once a file grows
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if _cannot_write(exc):
            raise write_error(path, exc) from None
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def note(message: str, kind: str = "note") -> None:
    """``kdframe: note: ...`` (or ``warning``) on stderr, once (by the main rank under torchrun)."""
    from . import distributed

    if distributed.is_main():
        print(f"kdframe: {kind}: {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    note(message, "warning")


LOCK_FILE = ".lock"
_HELD: dict[Path, list] = {}  # run directory -> [open lock file, users in this process]


def lock_directory(directory: str | os.PathLike) -> str | None:
    """Take ``directory/.lock`` (an exclusive, non-blocking ``flock``) for this process; None when held, else why not.

    Taking it again in the same process only counts a user (one process runs one workflow at a time, and tests
    run several in one process). A directory that is read-only is not locked: nothing can be written there, so
    a finished run can still print its table (what would write there fails with a :class:`WriteError`).
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return None
    directory = Path(directory).resolve()
    if directory in _HELD:
        _HELD[directory][1] += 1
        return None
    make_dir(directory)
    path = directory / LOCK_FILE
    try:
        handle = open(path, "a+")  # noqa: SIM115 - held open while the run lasts
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return None
        if _cannot_write(exc):
            raise write_error(path, exc) from None
        raise
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        return (f"{directory}: this run_dir is in use by another kdframe process (PID {holder}, holding {path}); "
                "wait for it to finish or stop it, or use another run_dir")
    except OSError as exc:  # a file system without locks: run unlocked, as before
        handle.close()
        note(f"{path}: cannot lock the run directory ({exc.strerror}); make sure no other kdframe process uses it")
        return None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    except OSError:
        pass  # the lock holds; only the PID shown to a second process is missing
    _HELD[directory] = [handle, 1]
    return None


def unlock_directory(directory: str | os.PathLike) -> None:
    """Give back one use of the lock taken by :func:`lock_directory`; the last one releases it."""
    directory = Path(directory).resolve()
    held = _HELD.get(directory)
    if held is None:
        return
    held[1] -= 1
    if held[1] <= 0:
        del _HELD[directory]
        held[0].close()  # closing the file releases the flock


# --- JSON-lines journals of resumable jobs (labelling, teacher labelling, generation) ---------------------------
def journal_records(path: Path) -> Iterator[dict]:
    """The records of a JSON-lines journal, in order; a torn line (a kill mid-write) is skipped."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def open_journal(path: Path) -> IO[bytes]:
    """``path`` opened for appending records, on a fresh line after a torn write."""
    f = open(path, "a+b")
    f.seek(0, os.SEEK_END)
    if f.tell():
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
            f.write(b"\n")
    return f


def write_record(f: IO[bytes], record: dict) -> None:
    """One journal record, flushed and fsynced."""
    f.write((json.dumps(record) + "\n").encode())
    f.flush()
    os.fsync(f.fileno())


def append_journal(path: Path, record: dict) -> None:
    """Append one record to the journal at ``path`` (opened and closed: for journals written now and then)."""
    with open_journal(path) as f:
        write_record(f, record)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
