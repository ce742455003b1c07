"""Decoding worker processes that cannot outlive the run that started them.

``Pool`` puts every job into its task pipe up front, so workers of a parent killed with ``kill -9`` would
go on decoding and writing shards until the pipe is drained. ``init_worker(parent_pid)`` (the pool's
initializer) asks the kernel to kill the worker when its parent dies (Linux ``PR_SET_PDEATHSIG``); where
that is not available a watchdog thread polls the parent's pid. Each worker also runs torch on one thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import threading
import time

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _parent_death_signal() -> bool:
    """Ask the kernel for SIGKILL when the parent dies; False where prctl is not available."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int, every_s: float = 0.5) -> None:
    while os.getppid() == parent_pid:
        time.sleep(every_s)
    os._exit(1)


def die_with_parent(parent_pid: int) -> None:
    """End this process as soon as ``parent_pid`` (its parent) is gone, kill -9 included."""
    if not _parent_death_signal():
        threading.Thread(target=_watch, args=(parent_pid,), daemon=True, name="avel-parent-watch").start()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


def init_worker(parent_pid: int) -> None:
    """Pool initializer: die with the parent; one torch thread (the same numbers as the main process)."""
    die_with_parent(parent_pid)
    import torch

    torch.set_num_threads(1)
