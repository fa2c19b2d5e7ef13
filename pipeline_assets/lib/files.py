"""Atomic, hashed file writing on local disk and object storage alike.

A file appears at its canonical path only when it is complete. On local disk it is written to a
hidden temporary name in the same folder, flushed, and renamed over the target. On object storage
an object becomes visible only when its upload completes, so it is written in place, and an upload
interrupted by an exception is aborted rather than committed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from upath import UPath

HASH_CHUNK_BYTES = 1 << 20
TEMP_SUFFIX = ".tmp"


def as_upath(path: str | os.PathLike[str] | UPath, **storage_options: Any) -> UPath:
    if isinstance(path, UPath) and not storage_options:
        return path
    return UPath(str(path), **storage_options) if storage_options else UPath(path)


def is_local(path: UPath) -> bool:
    return path.protocol in ("", "file", "local")


class HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through it to the inner file."""

    def __init__(self, inner: BinaryIO):
        super().__init__()
        self._inner = inner
        self._sha256 = hashlib.sha256()
        self.bytes_written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._sha256.update(view)
        self._inner.write(view)
        self.bytes_written += view.nbytes
        return view.nbytes

    def flush(self) -> None:
        self._inner.flush()

    def tell(self) -> int:
        return self.bytes_written

    @property
    def hexdigest(self) -> str:
        return self._sha256.hexdigest()


def sha256_file(path: str | os.PathLike[str] | UPath) -> tuple[str, int]:
    """SHA256 and size of a file, read in chunks so that memory stays flat."""
    digest = hashlib.sha256()
    size = 0
    with as_upath(path).open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def temp_path_for(target: Path) -> Path:
    # The writer's pid in the name: only the temporaries of writers that are gone are stale.
    return target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex}{TEMP_SUFFIX}")


def _writer_alive(temp: Path, target: Path) -> bool:
    """Whether the process that named `temp` (see `temp_path_for`) still runs on this machine."""
    middle = temp.name[len(target.name) + 2 : -len(TEMP_SUFFIX)]
    pid_text, _, _ = middle.partition("-")
    if not pid_text.isdigit():
        return False  # a name without a pid: from before pids were recorded
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # another thread of this process may be writing it
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(target: Path) -> int:
    """Remove temporaries an interrupted writer of `target` left behind; returns how many.

    A temporary whose writer still runs is left alone: two runs writing the same file at once
    (overlapping backfills) must not delete each other's file before its rename.
    """
    removed = 0
    if target.parent.exists():
        for stale in target.parent.glob(f".{target.name}.*{TEMP_SUFFIX}"):
            if _writer_alive(stale, target):
                continue
            stale.unlink(missing_ok=True)
            removed += 1
    return removed


@contextlib.contextmanager
def atomic_write(path: UPath, *, fsync: bool = True) -> Iterator[HashingWriter]:
    """Open `path` for writing so that it appears only complete; yields a hashing stream."""
    if is_local(path):
        target = Path(path.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target)
        temp = temp_path_for(target)
        try:
            with open(temp, "wb", buffering=HASH_CHUNK_BYTES) as raw:
                writer = HashingWriter(raw)
                yield writer
                raw.flush()
                if fsync:
                    os.fsync(raw.fileno())
            os.replace(temp, target)
            if fsync:
                _fsync_dir(target.parent)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    else:
        handle = path.open("wb")
        try:
            writer = HashingWriter(handle)
            yield writer
        except BaseException:
            discard = getattr(handle, "discard", None)
            if discard is not None:
                discard()
                # Otherwise fsspec's finalizer tries to commit the upload that was just discarded.
                handle.closed = True
            raise
        handle.close()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: UPath, data: bytes, *, fsync: bool = True) -> str:
    """Write small content (sidecars, JSON) atomically; returns its SHA256."""
    with atomic_write(path, fsync=fsync) as out:
        out.write(data)
    return out.hexdigest


@contextlib.contextmanager
def exclusive_file_lock(
    path: Path, timeout_s: float, on_timeout: Callable[[Path, float], Exception]
) -> Iterator[None]:
    """Hold an advisory `flock` on `path` (created if missing) for the duration of the block.

    The kernel releases the lock when the process ends, however it ends, so a killed run never
    leaves it behind. flock locks belong to the open file, so threads of one process are
    serialised too. When the lock is not free within `timeout_s`, raises `on_timeout(path,
    timeout_s)`, so each caller names what it was waiting for.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        delay = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise on_timeout(path, timeout_s) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        yield
    finally:
        os.close(fd)
