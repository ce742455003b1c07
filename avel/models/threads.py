"""The two encoders of a late-fusion model on two CPU threads (``encoder_threads = 2``, on in
``-c cgmnist_paper``): the first-slot encoder on the calling thread, the second-slot one on a worker thread,
forward and backward, each with one intra-op thread. The same operations on the same inputs, so the same
numbers bit for bit (tests/test_encoder_threads.py); on a 2-core CPU the encoders of a small model (CG-MNIST's
4-conv ones: ~100 operations a step, each too small for intra-op threads to pay) then take half the wall time
(BENCHMARKS.md, CG-MNIST at the paper's scale).

Training: ``EncoderPair`` (an autograd Function) runs both encoders with their own graphs and hands the
loss's graph their outputs; its backward runs the two encoders' backward passes on the two threads. The
parameters' gradients arrive in ``.grad`` as ever, but a ``torch.autograd.grad`` of the loss with respect to
the encoders' parameters does not see them: balancers that take one (``Balancer.differentiates_parameters``)
refuse the setting (``avel.engine.config.validate``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from avel.rules import check, one_of

ENCODER_THREADS = (1, 2)
_state = threading.local()  # the thread that set encoder_threads (the training loop's) sees it
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


@dataclass
class ThreadTimes:
    """Thread CPU seconds of the encoders (``record_times``): per call of the pair, the calling thread's and
    the worker's; ``critical`` sums each call's longer one (the wall time on idle cores, waits aside)."""

    calling: float = 0.0
    worker: float = 0.0
    critical: float = 0.0
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, calling: float, worker: float) -> None:
        with self.lock:
            self.calling, self.worker = self.calling + calling, self.worker + worker
            self.critical += max(calling, worker)
            self.calls += 1


_times: ThreadTimes | None = None


def active() -> bool:
    """Whether ``encoder_threads(2)`` holds on this thread (and no encoder pass is already running)."""
    return getattr(_state, "threads", 1) > 1


@contextlib.contextmanager
def encoder_threads(n: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Within: late-fusion models run their two encoders on ``n`` (1 or 2) threads, and torch's intra-op
    threads are shared among them (2 of 2 -> 1 each: two thread teams on two cores spin against each other).
    ``n`` = 1, or a device other than CPU: nothing changes."""
    check("encoder_threads", n, one_of(*ENCODER_THREADS))
    if n == 1 or torch.device(device).type != "cpu":
        yield
        return
    before, intra = getattr(_state, "threads", 1), torch.get_num_threads()
    _state.threads = n
    torch.set_num_threads(max(1, intra // n))
    try:
        yield
    finally:
        _state.threads = before
        torch.set_num_threads(intra)


@contextlib.contextmanager
def record_times() -> Iterator[ThreadTimes]:
    """Within: each encoder pass adds its threads' CPU seconds to the yielded ``ThreadTimes`` (benchmarks)."""
    global _times
    before, _times = _times, ThreadTimes()
    try:
        yield _times
    finally:
        _times = before


def encode_pair(first: nn.Module, second: nn.Module, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
    """``(first(x1), second(x2))``, the two on two threads; differentiable when grad mode is on."""
    if torch.is_grad_enabled():
        anchor = torch.empty(0, requires_grad=True)  # so that autograd records the pair even for inputs
        return EncoderPair.apply(anchor, first, second, x1, x2)  # that need no gradient (the data)
    return _both(lambda: first(x1), lambda: second(x2), grad=False)


class EncoderPair(torch.autograd.Function):
    """The two encoders' forward on two threads with their own graphs; backward: both on two threads."""

    @staticmethod
    def forward(ctx, anchor: Tensor, first: nn.Module, second: nn.Module, x1: Tensor, x2: Tensor):
        z1, z2 = _both(lambda: first(x1), lambda: second(x2), grad=True)
        ctx.graphs = (z1, z2)
        return z1.detach(), z2.detach()

    @staticmethod
    def backward(ctx, g1: Tensor, g2: Tensor):
        z1, z2 = ctx.graphs
        if z1.requires_grad or z2.requires_grad:
            _both(_backward(z1, g1), _backward(z2, g2), grad=False)
        return None, None, None, None, None


def _backward(z: Tensor, grad: Tensor) -> Callable[[], None]:
    return lambda: torch.autograd.backward(z, grad) if z.requires_grad else None


def _both(first: Callable, second: Callable, *, grad: bool) -> tuple:
    """``(first(), second())``: ``second`` on the worker thread under the caller's autocast, ``first`` here;
    the worker is always waited for (an error in either is raised after both ended)."""
    device_type = "cpu"
    amp = torch.is_autocast_enabled(device_type)
    dtype = torch.get_autocast_dtype(device_type)
    inference = torch.is_inference_mode_enabled()
    times = _times

    def worker() -> tuple[object, float]:
        t0 = time.thread_time()
        with (
            torch.inference_mode(inference),
            torch.set_grad_enabled(grad),
            torch.autocast(device_type, dtype=dtype, enabled=amp),
        ):
            out = second()
        return out, time.thread_time() - t0

    future: Future = _worker_pool().submit(worker)
    t0 = time.thread_time()
    try:
        with torch.set_grad_enabled(grad):
            out1 = first()
    finally:
        calling = time.thread_time() - t0
        out2, seconds = future.result()
    if times is not None:
        times.add(calling, seconds)
    return out1, out2


def _worker_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(1, thread_name_prefix="avel-encoder")
        return _pool
