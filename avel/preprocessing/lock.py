"""One writer per output file: ``output_lock(OUT)`` holds an exclusive lock on ``OUT.lock`` while a run
writes ``OUT`` and its temporary files (``OUT.tmp``, ``OUT.parts/``), so a second run on the same output
refuses at once, naming the running one, or waits for it. The lock is the kernel's (``flock``): a run
that is killed loses it, no stale lock is ever left behind to clear by hand.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``path`` whole or not at all: ``PATH.PID.tmp`` first, then renamed onto it (a kill -9 leaves the
    previous file, never a half-written one)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class OutputLocked(ValueError):
    """Another run holds the lock on the output."""


def _holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another run"
    who = info.get("command", "another run")
    return f"{who} (pid {info.get('pid')} on host {info.get('host')}, since {info.get('since')})"


@contextlib.contextmanager
def output_lock(
    out: str | Path,
    command: str,
    wait: bool = False,
    lock_path: Path | None = None,
    hint: str = "wait for it to finish, or pass --wait",
) -> Iterator[Path]:
    """Hold the lock of ``out`` (file ``out.lock``, or ``lock_path``) for the ``with`` block;
    ``OutputLocked`` names the holder (and ``hint``) when another run has it and ``wait`` is false, else
    block until it is free."""
    lock_path = lock_path or Path(f"{out}.lock")
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(lock_path)
            if not wait:
                os.close(fd)
                raise OutputLocked(f"{out}: {holder} is writing it; {hint}") from None
            fcntl.flock(fd, fcntl.LOCK_EX)
        # the holder before us may have removed the lock file after we opened it: lock the file on disk
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        info = {
            "command": command,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield lock_path
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()  # still ours: a waiting run re-opens the path and locks a new file
        os.close(fd)
