"""``cpu_conv_layout = "channels_last"``: channels_last CPU convolutions for the training steps, only where a
probe proved the run's shapes on this machine.

PyTorch's CPU channels_last convolution backward segfaults or aborts at some shapes (width 8 at 224 px, on
Intel Xeon and AMD EPYC: issue #24), so avel's CPU encoders run NCHW; at others (width 64 at 224 px) the
same layout is 1.26× faster (BENCHMARKS.md, #30). Before such a run trains, a subprocess builds the run's
model and runs forward + backward of each training batch shape (the train batch and the last partial one,
under the run's autocast and thread count) in NCHW and in channels_last. The layout is taken only when the
subprocess exits 0 **and** every output and gradient of the channels_last pass matches NCHW's (``allowed``:
within ``TOLERANCE`` of its norm plus a share of bf16 autocast's own rounding of it, the distance between
NCHW's bf16 and fp32 steps; heap corruption can be silent). Otherwise the run trains NCHW and prints one
line naming why (a signal, an exit, a mismatch, a timeout).

Then only the encoder passes the probe saw (``avel.models.encoders.layout_key``: the encoder's input
shape, gradients on, the autocast dtype) get channels_last; any other pass (evaluation, prototype passes,
a balancer's pass of another shape) stays NCHW. The parameters stay NCHW too: with channels_last weights
PyTorch's CPU convolution takes the channels_last path whatever its input's layout (their reorder costs the
proven passes ~9 %: BENCHMARKS.md). The verdict is cached per CPU (model, flags), torch version,
thread count, model and shapes in ``cache_dir()`` (a timeout is not cached: it depends on the load).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from avel.data.splits import SplitData
from avel.engine.provenance import cpu_flags, cpu_model
from avel.models.encoders import LayoutKey, cpu_channels_last

PROBE_VERSION = 4  # bump when what the probe runs changes: older cached verdicts are then not read
TOLERANCE = 1e-3  # relative L2 distance per output / gradient tensor, plus ...
FACTOR = {False: 0.5, True: 2.0}  # ... this share of bf16's rounding (fp32 runs: False, bf16 autocast: True)
TIMEOUT_S = float(os.environ.get("AVEL_PROBE_TIMEOUT_S", 1800))
LAYOUTS = ("nchw", "channels_last")


@dataclass
class Case:
    """One training batch shape: the model's inputs (shape, dtype) as the split's ``batch`` makes them."""

    name: str  # "train batch 16", "last partial batch 6"
    audio: tuple[int, ...]
    visual: tuple[int, ...]
    audio_dtype: str
    visual_dtype: str

    def describe(self) -> str:
        dims = ("x".join(map(str, s)) for s in (self.audio, self.visual))
        return f"{self.name} (audio {next(dims)}, visual {next(dims)})"


@dataclass
class Verdict:
    """The probe's answer: ``layout`` "channels_last" (``proven``: the encoder passes it may take) or
    "nchw" (``reason``: why not)."""

    layout: str
    reason: str
    proven: list[LayoutKey] = field(default_factory=list)
    seconds: float = 0.0  # the probe's wall time (when it ran)
    cached: bool = False
    cacheable: bool = True

    def record(self) -> dict[str, Any]:
        """What results.json keeps of it."""
        return {"layout": self.layout, "reason": self.reason, "probe_s": round(self.seconds, 1)}


def probe_cases(train: SplitData, batch_size: int) -> list[Case]:
    """The training batch shapes of an epoch over ``train``: the batch and the last partial batch."""
    n = len(train)
    sizes = [min(batch_size, n)]
    if n > batch_size and n % batch_size:
        sizes.append(n % batch_size)
    cases = []
    for i, size in enumerate(sizes):
        batch = train.batch(torch.arange(size), True, torch.Generator().manual_seed(0))
        name = f"{'train batch' if i == 0 else 'last partial batch'} {size}"
        a, v = batch.audio, batch.visual
        cases.append(Case(name, tuple(a.shape), tuple(v.shape), str(a.dtype), str(v.dtype)))
    return cases


def verdict_for(kwargs: dict[str, Any], train: SplitData, batch_size: int, amp: bool) -> Verdict:
    """Whether a run of the model of ``kwargs`` (``build_model``'s) may train on ``train`` in batches of
    ``batch_size`` with channels_last CPU convolutions (cached, else probed): ``avel train`` asks this."""
    return proven_layout(kwargs, probe_cases(train, batch_size), amp)


def cache_dir() -> Path:
    """``$AVEL_CACHE_DIR``, else ``$XDG_CACHE_HOME/avel``, else ``~/.cache/avel``."""
    if os.environ.get("AVEL_CACHE_DIR"):
        return Path(os.environ["AVEL_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "avel"


def cache_key(kwargs: dict[str, Any], cases: list[Case], amp: bool, threads: int) -> dict[str, Any]:
    """What a verdict holds for: this CPU, torch build, thread count, model and batch shapes."""
    return {
        "probe": PROBE_VERSION,
        "cpu": cpu_model(),
        "cpu_flags": hashlib.sha256(" ".join(cpu_flags()).encode()).hexdigest()[:16],
        "arch": platform.machine(),
        "torch": torch.__version__,
        "threads": threads,
        "amp": amp,
        "model": {k: repr(v) for k, v in sorted(kwargs.items())},
        "cases": [c.__dict__ for c in cases],
    }


def cache_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return cache_dir() / f"conv-layout-{digest}.json"


def proven_layout(
    kwargs: dict[str, Any], cases: list[Case], amp: bool, threads: int | None = None
) -> Verdict:
    """The cached verdict for these shapes on this machine, else the probe's (then cached)."""
    threads = threads or torch.get_num_threads()
    key = cache_key(kwargs, cases, amp, threads)
    path = cache_path(key)
    try:
        stored = json.loads(path.read_text())
        if stored["key"] == json.loads(json.dumps(key, default=str)):
            proven = _layout_keys(stored["proven"])
            return Verdict(stored["layout"], stored["reason"], proven, stored["seconds"], cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    verdict = run_probe(kwargs, cases, amp, threads)
    if verdict.cacheable:
        from avel.preprocessing.lock import write_text_atomic

        record = {"key": key, "layout": verdict.layout, "reason": verdict.reason, "seconds": verdict.seconds}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps({**record, "proven": verdict.proven}, indent=1, default=str))
        except OSError:  # a read-only cache: the verdict holds for this run, the next one probes again
            pass
    return verdict


def _layout_keys(rows: list) -> list[LayoutKey]:
    """``layout_key`` tuples back from their JSON lists (the cache's and the subprocess's)."""
    return [(tuple(shape), bool(grad), str(dtype)) for shape, grad, dtype in rows]


def run_probe(
    kwargs: dict[str, Any], cases: list[Case], amp: bool, threads: int, timeout: float = TIMEOUT_S
) -> Verdict:
    """Forward + backward of the model of ``kwargs`` at each case, NCHW then channels_last, in a subprocess;
    the verdict from its exit and its numbers."""
    spec = {"kwargs": {**kwargs, "pretrained": False}, "cases": [c.__dict__ for c in cases], "amp": amp}
    spec["threads"] = threads
    root = str(Path(__file__).resolve().parents[2])  # the avel checkout this process imports
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    with tempfile.TemporaryDirectory(prefix="avel-probe-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.pt", Path(tmp) / "result.json"
        torch.save(spec, spec_path)
        command = [sys.executable, "-m", "avel.engine.conv_probe", str(spec_path), str(result_path)]
        t0 = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or ""
            where = _running(out, cases)
            reason = f"the probe ran past {timeout:.0f} s{where}"
            return Verdict("nchw", reason, seconds=time.perf_counter() - t0, cacheable=False)
        seconds = time.perf_counter() - t0
        where = _running(done.stdout, cases)
        if done.returncode < 0:
            name = signal.Signals(-done.returncode).name
            return Verdict("nchw", f"the probe died with {name}{where}", seconds=seconds)
        if done.returncode != 0 or not result_path.exists():
            tail = (done.stderr.strip().splitlines() or ["no message"])[-1]
            reason = f"the probe failed (exit {done.returncode}){where}: {tail}"
            return Verdict("nchw", reason, seconds=seconds)
        result = json.loads(result_path.read_text())
    if result.get("mismatch"):
        return Verdict("nchw", result["mismatch"], seconds=seconds)
    proven = _layout_keys(result["proven"])
    largest, used = max(result["errors"].values(), default=0.0), max(result["scores"].values(), default=0.0)
    reason = (
        f"proven: {len(cases)} batch shape(s), outputs and gradients as NCHW's (at most {used:.2g} of the "
        f"allowed distance; relative {largest:.1e}{', bf16 autocast' if amp else ''})"
    )
    return Verdict("channels_last", reason, proven, seconds)


def _running(stdout: str, cases: list[Case]) -> str:
    """ " at CASE (LAYOUT)" of the last case the worker started, or "" before its first."""
    started = [line.split(" ", 2)[1:] for line in stdout.splitlines() if line.startswith("start ")]
    if not started:
        return " before its first case"
    index, layout = started[-1]
    return f" at {cases[int(index)].describe()}, {layout}, forward + backward"


# ---------------------------------------------------------------------------------------- the subprocess


def _inputs(case: Case) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)

    def make(shape: tuple[int, ...], dtype: str) -> Tensor:
        kind = getattr(torch, dtype.removeprefix("torch."))
        if kind.is_floating_point:
            return torch.randn(shape, generator=g).to(kind)
        return torch.randint(0, 256, shape, generator=g).to(kind)

    return make(case.audio, case.audio_dtype), make(case.visual, case.visual_dtype)


def _step(model: torch.nn.Module, audio: Tensor, visual: Tensor, amp: bool) -> dict[str, Tensor]:
    """One training forward + backward; the outputs and every gradient, as fp32."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out = model(audio, visual)
    got = {"logits": out.logits.float()}
    for name in ("z_audio", "z_visual"):
        if getattr(out, name, None) is not None:
            got[name] = getattr(out, name).float()
    sum(v.square().mean() for v in got.values()).backward()
    got = {k: v.detach() for k, v in got.items()}
    got.update({f"grad {n}": p.grad.float() for n, p in model.named_parameters() if p.grad is not None})
    return got


def relative_error(got: Tensor, ref: Tensor) -> float:
    """‖got − ref‖ / ‖ref‖ (0 for two zero tensors; inf for non-finite values)."""
    if not bool(got.isfinite().all()):
        return float("inf")
    return float((got - ref).norm() / ref.norm().clamp_min(1e-12)) if ref.norm() > 0 else float(got.norm())


def allowed(ref: Tensor, rounding: float, amp: bool) -> float:
    """How far (L2) channels_last may land from NCHW's ``ref``: ``TOLERANCE`` of its norm plus
    ``FACTOR[amp]`` times ``rounding``, the distance between NCHW's bf16-autocast and fp32 results of the
    tensor (the precision ``--amp`` trains at). Measured on this AMD EPYC, ResNet18 width 64, 224 px, batch
    16: in fp32 the layouts differ by up to 4.4 % in layer1's batch-norm gradients (sums over 150k values
    that cancel; channels_last's reductions are 15x further from float64 there than NCHW's), which is
    0.09x bf16's rounding; in bf16 by up to 1.15x bf16's rounding (two bf16 results)."""
    return TOLERANCE * float(ref.norm()) + FACTOR[amp] * rounding


def score(got: Tensor, ref: Tensor, rounding: float, amp: bool) -> float:
    """‖got − ref‖ over ``allowed``: > 1 fails (inf: a non-finite value)."""
    if not bool(got.isfinite().all()):
        return float("inf")
    distance = float((got - ref).norm())
    return distance / allowed(ref, rounding, amp) if distance > 0 else 0.0


def worker(spec_path: Path, result_path: Path, log: Callable[[str], None] = print) -> None:
    from avel.families import build_model

    spec = torch.load(spec_path, weights_only=False)
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    model = build_model(**spec["kwargs"]).train()
    amp = spec["amp"]
    proven: set[LayoutKey] = set()
    errors: dict[str, float] = {}  # each case's worst tensor: its relative error and its score
    worst_scores: dict[str, float] = {}
    for i, case in enumerate(Case(**c) for c in spec["cases"]):
        audio, visual = _inputs(case)
        log(f"start {i} nchw")
        nchw = {a: _step(copy.deepcopy(model), audio, visual, a) for a in (amp, not amp)}
        ref, rounding = nchw[amp], {k: float((nchw[True][k] - nchw[False][k]).norm()) for k in nchw[amp]}
        log(f"start {i} channels_last")
        with cpu_channels_last(None) as state:
            got = _step(copy.deepcopy(model), audio, visual, amp)
        scores = {k: score(got[k], ref[k], rounding[k], amp) for k in ref}
        worst = max(scores, key=scores.get)
        errors[case.name] = relative_error(got[worst], ref[worst])
        worst_scores[case.name] = scores[worst]
        if not scores[worst] <= 1:
            bound = allowed(ref[worst], rounding[worst], amp) / max(float(ref[worst].norm()), 1e-12)
            mismatch = (
                f"channels_last differs from NCHW at {case.describe()}: {worst} relative error "
                f"{errors[case.name]:.2g} > {bound:.2g}"
            )
            result_path.write_text(json.dumps({"mismatch": mismatch, "errors": errors}))
            return
        proven |= state.seen
        log(f"ok {i}")
    result_path.write_text(json.dumps({"proven": sorted(proven), "errors": errors, "scores": worst_scores}))


if __name__ == "__main__":
    worker(Path(sys.argv[1]), Path(sys.argv[2]), lambda line: print(line, flush=True))
