"""What the project writes: atomic file writes (a temporary file beside the target, then one rename, so a reader
or a killed writer never sees half a file), file hashes, and the lock that keeps one process per run folder."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".lock"
_held_locks: set[int] = set()  # the run-lock descriptors this process holds


def _drop_inherited_locks() -> None:
    """In a forked child (an image decode worker, say): close the copies of the parent's run-lock descriptors.

    flock belongs to the open file, which a fork shares: a child that kept the copy would hold the run's lock
    after its parent was killed, and refuse every rerun. The parent's own descriptor keeps the lock held."""
    for fd in _held_locks:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_locks.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked: trained with other settings, busy, or not writable."""


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder for this process: a second process on the same run stops with RunFolderError.

    flock, so a crashed or killed holder releases it at once; the lock file stays (it holds nothing). The lock is
    never inherited: not across exec (O_CLOEXEC), not across fork (a forked child closes its copy at once).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunFolderError(
            f"another process is training the run in {run_dir} right now (the same command started twice?); "
            "wait for it to end, or give this run another paths.root"
        ) from None
    _held_locks.add(fd)
    try:
        yield
    finally:
        _held_locks.discard(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def is_locked(run_dir: Path) -> bool:
    """Whether another process holds run_dir's lock now."""
    path = Path(run_dir) / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes: how a run record names the exact teacher file it used."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; when the block ends without an error it replaces `path`.

    On an error (a full disk, a killed writer's next start) `path` keeps its old content and the
    temporary file is removed. The temporary name keeps the suffix, so format-guessing writers work.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: dict) -> None:
    """JSON with an indent; NaN and infinity are refused (ValueError): they are not results."""
    write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
