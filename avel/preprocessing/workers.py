"""Decoding worker processes that cannot outlive the run that started them, and cannot hang it.

``run_jobs`` maps a decoding function over jobs, in this process (on this thread, or on ``threads``
threads of it: the decoders release the GIL while they decode) or in spawned workers
(``concurrent.futures.ProcessPoolExecutor``: a worker that dies — killed, out of memory — breaks the pool
with an error instead of leaving the run waiting forever, as ``multiprocessing.Pool`` would).
``init_worker(parent_pid)`` (the workers' initializer) asks the kernel to kill the worker when its parent
dies (Linux ``PR_SET_PDEATHSIG``); where that is not available a watchdog thread polls the parent's pid.
Each worker also runs torch on one thread, and so does the run's own process while it decodes
(``one_torch_thread``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, TypeVar

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


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one intra-op thread inside the block (as in a worker: ``init_worker``), the caller's count
    after it. Decoding's parallelism is its own threads (frames beside the writer, ``threads``) or processes;
    torch's pool beside them (one thread per core by default) slowed a one-thread torchcodec run on two idle
    cores from 18.8 to 26.5 ms a video (BENCHMARKS.md, #30), and every path computes with one thread alike."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


J = TypeVar("J")


def run_jobs(
    fn: Callable[[J], dict[str, Any]],
    jobs: list[J],
    workers: int,
    *,
    ordered: bool = False,
    threads: int = 1,
) -> Iterator[dict[str, Any]]:
    """``fn`` over ``jobs``: here with ``workers <= 1`` (on this thread, or on ``threads`` threads of this
    process), else in spawned processes that die with this one.

    Results come in job order when ``ordered``, else as they finish. At most ``2 * workers`` (``2 *
    threads``) jobs are in the workers' hands at a time, so workers of a parent killed with ``kill -9`` stop
    within a few jobs. A dead worker raises ``ChildProcessError`` (an ``OSError``: one line from the CLI),
    never a hang.
    """
    if workers <= 1 and threads > 1 and len(jobs) > 1:
        n = min(threads, len(jobs))
        with ThreadPoolExecutor(n, thread_name_prefix="avel-decode") as ex:
            try:
                yield from _bounded(ex, fn, iter(jobs), 2 * n, ordered)
            finally:
                ex.shutdown(wait=True, cancel_futures=True)
        return
    if workers <= 1 or len(jobs) <= 1:
        yield from map(fn, jobs)
        return
    n = min(workers, len(jobs))
    context = mp.get_context("spawn")
    with ProcessPoolExecutor(n, mp_context=context, initializer=init_worker, initargs=(os.getpid(),)) as ex:
        try:
            yield from _bounded(ex, fn, iter(jobs), 2 * n, ordered)
        except BrokenProcessPool as e:
            raise ChildProcessError(f"a decoding worker died ({e}); re-run to go on") from e
        finally:
            ex.shutdown(wait=True, cancel_futures=True)


def _bounded(ex: Executor, fn: Callable, jobs: Iterable, depth: int, ordered: bool) -> Iterator:
    """Keep ``depth`` jobs submitted; yield their results in order (``ordered``) or as they finish."""
    pending: list = []
    for job in jobs:
        pending.append(ex.submit(fn, job))
        if len(pending) >= depth:
            yield from _drain(pending, ordered, until=depth - 1)
    yield from _drain(pending, ordered, until=0)


def _drain(pending: list, ordered: bool, until: int) -> Iterator:
    while len(pending) > until:
        if ordered:
            yield pending.pop(0).result()
            continue
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for f in [f for f in pending if f in done]:
            pending.remove(f)
            yield f.result()
