"""The training loop: ``run_training(cfg)`` and ``train_one_epoch``, the only code that steps the optimizer.

One path per step: balancer forward + loss -> zero_grad -> backward -> balancer gradient edit ->
clip -> step. Mixed precision (``amp``) is bf16 autocast, which needs no loss scaling, on CUDA and on CPUs
with native bf16 (AVX512-BF16 / AMX; elsewhere ``amp`` is off). Logged values stay on
the device until the epoch ends. A run directory holds the resolved config, ``last.pt`` / ``best.pt``,
``metrics.jsonl`` (one line per epoch) and ``results.json``; re-running on the same directory resumes
from ``last.pt`` and produces the same final metrics as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from avel import families
from avel.balance import BALANCERS, build_balancer
from avel.balance.base import Balancer, EpochMeter
from avel.balance.pmr import released_rows, released_source
from avel.data.splits import DataSplits, SplitData
from avel.engine import config as config_mod
from avel.engine import conv_probe, distributed
from avel.engine.checkpoint import (
    load_checkpoint,
    load_matching_weights,
    model_from_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from avel.engine.compiling import compile_encoders
from avel.engine.config import TrainConfig, bf16_supported
from avel.engine.cpu_memory import keep_freed_memory
from avel.engine.evaluate import evaluate, train_prototypes
from avel.engine.measures import balance_measures, peak_memory_mib, reset_peak_memory
from avel.engine.provenance import provenance
from avel.engine.tensorboard import TensorBoardLog
from avel.families import build_model, load_splits
from avel.models.base import AVModel
from avel.models.encoders import cpu_channels_last
from avel.models.prototypes import compute_prototypes
from avel.models.threads import encoder_threads
from avel.preprocessing.lock import output_lock, write_text_atomic

# config keys that may change when a run is resumed (they do not change what is computed)
RESUMABLE_CHANGES = {
    "epochs",
    "progress",
    "out",
    "device",
    "eval_every",
    "modality_eval_every",
    "tensorboard",
    "measures",
    "cg_stem",  # the same model computed another way, equal up to rounding (as device)
    "encoder_threads",  # the same numbers bit for bit, on two threads
    "compile",  # the same model, its encoders compiled: equal up to rounding (as cg_stem)
    "cpu_conv_layout",  # the same model, CPU convolutions in another layout: equal up to rounding
}
STOPPED = "stopped.json"  # RUN/stopped.json: the run stopped at a non-finite step (epoch, batch, message)
BUSY = "wait for it to finish, or give another --out"  # a second run on a run directory
RELEASED_LABEL = (
    "RELEASED PROTOCOL: reads the test split while training (PMR's prototypes from a tenth of test, "
    "test accuracy every epoch, the best test epoch reported), a measurement of the released code, "
    "not a clean result"
)
RELEASED_TRAIN_LABEL = (  # the released CREMA-D script: prototypes from train, test every epoch
    "RELEASED PROTOCOL: reads the test split while training (test accuracy every epoch, the best test "
    "epoch reported; PMR's prototypes from a fresh tenth of train every epoch, as the released CREMA-D "
    "script), a measurement of the released code, not a clean result"
)
CLEAN_SEAL = "the clean protocol reads test once per reported model, after training (protocol = 'clean')"
# what a checkpoint keeps of its data file to rebuild inputs later (predict, extract)
DATA_META_KEYS = ("classes", "kind", "num_classes", "input_mode", "family", "modalities", "segment_width")


def released_label(cfg: TrainConfig) -> str:
    """The released protocol's label for ``cfg.model`` (where its prototypes come from)."""
    return RELEASED_TRAIN_LABEL if released_source(cfg.model) == "train" else RELEASED_LABEL


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return the generator that orders batches and draws augmentations."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def build_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay), Adam (betas) or AdaGrad, all at ``cfg.lr``."""
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay)  # "adagrad" (validate)


def build_scheduler(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler:
    """Learning-rate schedule, stepped once per epoch, or once per optimizer step with
    ``lr_step_unit = "iteration"`` (step / multistep counted in iterations, as the AVEL reference)."""
    sched = torch.optim.lr_scheduler
    if cfg.schedule == "none":
        return sched.LambdaLR(optimizer, lambda epoch: 1.0)
    if cfg.schedule == "step":
        return sched.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.lr_gamma)
    if cfg.schedule == "multistep":
        return sched.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.lr_gamma)
    return sched.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))  # "cosine" (validate)


def model_kwargs(cfg: TrainConfig, data: DataSplits) -> dict[str, Any]:
    """Constructor arguments of the model (``build_model``'s, and the balancer whose ``prepare_model`` adds
    layers); stored in every checkpoint to rebuild it (``avel.engine.checkpoint.model_from_kwargs``)."""
    train = getattr(data, "train", None)  # the family may size its model from the train arrays
    shapes = (tuple(train.audio.shape), tuple(train.visual.shape)) if train is not None else ((), ())
    return _model_kwargs(cfg, data.meta["input_mode"], data.meta["num_classes"], *shapes)


def _model_kwargs(
    cfg: TrainConfig,
    input_mode: str,
    num_classes: int,
    audio_shape: tuple[int, ...],
    visual_shape: tuple[int, ...],
) -> dict[str, Any]:
    """``model_kwargs`` from the input mode, the class count and the shapes of the train arrays."""
    kwargs: dict[str, Any] = {
        "family": cfg.model,
        "fusion": cfg.fusion,
        "input_mode": input_mode,
        "num_classes": num_classes,
        "modality": cfg.modality,
        "width": cfg.width,
        "pretrained": cfg.pretrained,
        "balancer": cfg.balance,
    }
    if cfg.fusion == "mmtm":
        kwargs["mmtm_gate"] = cfg.mmtm_gate
        kwargs["mmtm_head"] = cfg.mmtm_head
    if cfg.fusion == "centralnet":
        kwargs["centralnet_unimodal_loss"] = cfg.centralnet_unimodal_loss
    if cfg.compress:  # only when on: checkpoints without it rebuild as before
        kwargs["compress"] = True
    if cfg.cg_stem != "layers":  # only when on, as compress
        kwargs["cg_stem"] = cfg.cg_stem
    family = families.get(cfg.model)
    return {**kwargs, **family.data_kwargs(cfg, input_mode, audio_shape, visual_shape)}


def probe_model(cfg: TrainConfig) -> AVModel:
    """The smallest model of ``cfg``'s family, fusion and modality (width 8, the family's first input mode,
    no data): enough to ask a balancer's ``applies_to``, which depends on the fusion's structure only."""
    input_mode = families.get(cfg.model).input_modes[0]
    kwargs = _model_kwargs(cfg, input_mode, 5, (1, 1, 8), (1, 1, 1, 1, 8))
    return build_model(**{**_build_args(kwargs), "width": 8, "pretrained": False})


def _build_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``build_model``'s arguments of ``model_kwargs`` (without the balancer)."""
    return {k: v for k, v in kwargs.items() if k != "balancer"}


class NotApplicable(ValueError):
    """The configured rebalancing method cannot train the configured model (ablate marks the cell n/a)."""

    def __init__(self, balance: str, reason: str) -> None:
        super().__init__(f"--balance {balance} does not apply to this model: {reason}")
        self.reason = reason


def check_applicable(cfg: TrainConfig, model: AVModel | None = None) -> str | None:
    """Why ``cfg.balance`` cannot train ``cfg``'s model (balancer × model × modality), or None when it can.

    ``model`` is the model to train; without it, ``probe_model(cfg)`` answers for the configuration.
    """
    if cfg.balance == "none":
        return None
    if cfg.modality != "both":
        return f"{cfg.balance} needs both modalities; uni-modal runs use --balance none"
    balancer = build_balancer(cfg.balance, **config_mod.balancer_options(cfg))
    return balancer.applies_to(model if model is not None else probe_model(cfg))


def initialise(model: AVModel, cfg: TrainConfig, log: Callable[[str], None], resuming: bool) -> None:
    """``cfg.init`` ("reference": AVE-ECCV18's Xavier-uniform layers) then ``cfg.init_from`` (the weights of
    another run's checkpoint with matching name and shape); a resumed run takes its own weights instead."""
    if cfg.init == "reference":
        if not hasattr(model, "reference_init"):
            raise ValueError(
                f"--init reference is AVE-ECCV18's initialisation: --model avel, not {cfg.model}"
            )
        model.reference_init()
    if cfg.init_from and not resuming:
        loaded, kept = load_matching_weights(model, cfg.init_from)
        log(f"init-from {cfg.init_from}: {len(loaded)} tensors loaded, {len(kept)} kept ({', '.join(kept)})")


def make_balancer(cfg: TrainConfig, model: AVModel) -> Balancer:
    """The configured balancer for ``model``; ``NotApplicable`` when it cannot train it."""
    reason = check_applicable(cfg, model)
    if reason:
        raise NotApplicable(cfg.balance, reason)
    balancer = build_balancer(cfg.balance, **config_mod.balancer_options(cfg))
    balancer.load_run = model_from_checkpoint  # UMT's teachers
    return balancer


def check_splits(cfg: TrainConfig, data: DataSplits) -> None:
    """Refuse, before anything is written, splits training cannot use: an empty train, val or test split,
    or (for the rebalancers that weigh event segments) a train split without any event segment."""
    for name in ("train", "val", "test"):
        if len(getattr(data, name)) == 0:
            why = ""
            if data.meta.get("skipped_no_event", {}).get(name):
                why = " (its videos have no event segment, and clip classifiers train on event spans)"
            raise ValueError(
                f"{cfg.data}: the {name} split has no rows{why}; training needs rows in train, val and test"
            )
    if not BALANCERS[cfg.balance].weighs_event_segments or not families.get(cfg.model).per_segment:
        return
    background = data.meta["num_classes"] - 1
    for name in build_balancer(cfg.balance, **config_mod.balancer_options(cfg)).event_splits():
        if not bool((getattr(data, name).labels != background).any()):
            raise ValueError(
                f"{cfg.data}: the {name} split has no event segment (every segment is background); "
                f"--balance {cfg.balance} weighs the modalities on event segments"
            )


def train_one_epoch(
    model: AVModel,
    balancer: Balancer,
    train: SplitData,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    generator: torch.Generator,
    progress: Callable[[int], None] | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> dict[str, float]:
    """One pass over the train split (shuffled unless ``cfg.shuffle`` is false); returns the epoch means of
    the balancer's logs. A ``scheduler`` given here is stepped after every optimizer step."""
    model.train()
    meter = EpochMeter()
    amp = cfg.amp and bf16_supported(train.device)
    rows = balancer.train_indices(train)  # None: every row
    batch_size = cfg.batch_size // distributed.world_size()  # each rank's share of the global batch
    batches = train.batches(
        batch_size, shuffle=cfg.shuffle, generator=generator, indices=rows, train=True, reuse=True
    )
    watch = FiniteWatch(train)
    for number, batch in enumerate(batches):
        for _ in range(getattr(balancer, "steps_per_batch", 1)):  # MLA: one step per modality
            with torch.autocast(train.device.type, dtype=torch.bfloat16, enabled=amp):
                result = balancer.training_loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            result.loss.backward()
            distributed.sync_gradients(model)  # under torchrun without DDP (see distributed.wrap)
            balancer.before_optimizer_step(model, result)
            if cfg.grad_clip > 0:
                norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            else:
                norm = grad_norm(model.parameters())
            watch.step(result.loss.detach(), norm, batch.index, number)
            optimizer.step()
            meter.update({"loss": result.loss.detach(), **result.logs})
        if scheduler is not None:
            scheduler.step()
        if progress is not None:
            progress(len(batch.index))
    watch.check()
    return meter.result()


class NonFiniteError(RuntimeError):
    """A training step gave a non-finite loss or gradient (``step``: 0-based batch of the epoch)."""

    def __init__(self, step: int, rows: Tensor, what: str) -> None:
        shown = ", ".join(str(int(r)) for r in rows[:8]) + (", ..." if len(rows) > 8 else "")
        super().__init__(f"batch {step} (file rows {shown}): {what}")
        self.step, self.rows, self.what = step, rows, what


class FiniteWatch:
    """The first step of an epoch whose loss or gradient norm is not finite, found without a host sync per
    step on an accelerator: one ``isfinite`` per step accumulated on the device, read at the epoch's end
    (``check``). On CPU, where reading it costs nothing, ``step`` raises at once."""

    def __init__(self, split: SplitData) -> None:
        self.split, self.eager = split, split.device.type == "cpu"
        self.first = torch.full((), -1, dtype=torch.long, device=split.device)  # -1: every step finite
        self.steps: list[tuple[int, Tensor, Tensor]] = []  # each step's (batch number, batch rows, loss)

    def step(self, loss: Tensor, grad_norm: Tensor, index: Tensor, batch: int) -> None:
        k = len(self.steps)
        bad = ~(torch.isfinite(loss.float()) & torch.isfinite(grad_norm.float()))
        self.first = torch.where((self.first < 0) & bad, k, self.first)
        self.steps.append((batch, index, loss.float()))
        if self.eager:
            self.check()

    def check(self) -> None:
        k = int(self.first)
        if k >= 0:
            batch, index, loss = self.steps[k]
            what = f"the loss is {float(loss)}" if not torch.isfinite(loss) else "a gradient is not finite"
            raise NonFiniteError(batch, self.split.rows[index.cpu()], what)


def grad_norm(parameters) -> Tensor:
    """The 2-norm of every gradient together (what ``clip_grad_norm_`` computes): inf or nan when any
    gradient element is (or the norm overflows)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def params_finite(model: nn.Module) -> bool:
    """Every parameter and buffer of ``model`` is finite (one host sync)."""
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True


def modality_epoch(cfg: TrainConfig, epoch: int) -> bool:
    """Per-modality accuracies at this epoch: epochs 0, N, 2N, ... for ``modality_eval_every = N`` (counted
    as ``eval_every``; 0: none of them) and the last."""
    every = cfg.modality_eval_every
    return epoch + 1 == cfg.epochs or (every > 0 and epoch % every == 0)


def evaluate_split(
    model: AVModel, data: DataSplits, split: SplitData, cfg: TrainConfig, with_modalities: bool
) -> dict[str, float]:
    """The one evaluation of a run, for val during training and for test at the end: the fused accuracy,
    and with ``with_modalities`` each modality's prototype accuracy (prototypes from the whole train split:
    a forward pass over train, so only on the epochs that ask for it)."""
    both = with_modalities and cfg.modality == "both"
    protos = train_prototypes(model, data.train) if both else None
    return evaluate(model, split, prototypes=protos, amp=cfg.amp and bf16_supported(split.device))


def released_test(model: AVModel, data: DataSplits, cfg: TrainConfig, epoch: int) -> dict[str, float]:
    """The released protocol's test evaluation after epoch ``epoch``: fused accuracy and each modality's
    prototype accuracy with prototypes from a tenth of test (CG-MNIST) or of train (resnet18: the released
    CREMA-D script), the rows the next epoch's PMR draws, as the released script computes them once after
    each epoch for both."""
    protos = None
    if cfg.modality == "both":
        split = data.train if released_source(cfg.model) == "train" else data.test
        rows = released_rows(len(split), cfg.seed, epoch + 1, split.device)
        c_a, c_v, _ = compute_prototypes(model, split, model.prototype_classes, model.background, rows)
        protos = (c_a, c_v)
    return evaluate(model, data.test, prototypes=protos, amp=cfg.amp and bf16_supported(data.test.device))


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    label = "-released" if cfg.protocol == "released" else ""  # the released protocol's runs say so
    return Path("runs") / f"{cfg.model}-{cfg.fusion}-{cfg.balance}{label}-s{cfg.seed}-{stamp}"


def _check_resumable(stored: dict[str, Any], cfg: TrainConfig, run_dir: Path) -> None:
    now = config_mod.to_dict(cfg)
    stored = {**config_mod.to_dict(TrainConfig()), **stored}  # keys added since the run began: defaults
    stored = {k: config_mod.UNSET if v is None else v for k, v in stored.items()}  # None before UNSET
    diff = sorted(k for k in now if k not in RESUMABLE_CHANGES and stored.get(k) != now[k])
    if diff:
        changes = ", ".join(f"{k}: {stored.get(k)!r} -> {now[k]!r}" for k in diff)
        raise ValueError(
            f"{run_dir} holds a run with a different configuration ({changes}); "
            "use another --out directory, or the same options to resume it"
        )


def _trim_metrics(path: Path, next_epoch: int) -> None:
    """Drop metric lines of epochs the checkpoint does not contain (written after it, before a crash), and
    a last line a kill cut short."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if _epoch(ln) is not None and _epoch(ln) < next_epoch]
    write_text_atomic(path, "".join(ln + "\n" for ln in keep))


def _epoch(line: str) -> int | None:
    """The epoch of a metrics line, or None for a blank or cut line."""
    try:
        return int(json.loads(line)["epoch"])
    except (ValueError, KeyError, TypeError):
        return None


class _Progress:
    """A rich progress bar per epoch (samples/s); silent when disabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None

    def start(self, epoch: int, total: int) -> Callable[[int], None] | None:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console()
        if not console.is_terminal:  # a log file or a pipe: epoch lines only, no bar (nor its blank line)
            return None
        self.bar = Progress(
            TextColumn(f"epoch {epoch:3d}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=True,
            console=console,
        )
        self.bar.start()
        task = self.bar.add_task("train", total=total)
        return lambda n: self.bar.advance(task, n)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def print_line(line: str) -> None:
    """One log line, flushed at once: epoch lines arrive as they happen when stdout is a file or a pipe."""
    print(line, flush=True)


def run_training(cfg: TrainConfig, log: Callable[[str], None] = print_line) -> dict[str, Any]:
    """Train, select on val, test the selected checkpoint once; returns (and writes) results.json.

    One process writes a run directory at a time: a second run on it refuses (``OutputLocked``, naming
    the first), so two grid processes sharing a grid never train the same seed twice."""
    with contextlib.ExitStack() as held:
        return _run_training(cfg, log, held)


def _run_training(cfg: TrainConfig, log: Callable[[str], None], held: contextlib.ExitStack) -> dict[str, Any]:
    cfg, ctx, device = _setup(cfg)
    held.enter_context(encoder_threads(cfg.encoder_threads, device))  # evaluation passes included
    log = log if ctx.main else _silent
    generator = seed_everything(cfg.seed)
    data = _prepare_data(cfg, device, ctx, log)
    run = _build_run(cfg, ctx, device, data, generator, log)
    run.cfg, layout = _cpu_conv_layout(run, held)
    run.dir.mkdir(parents=True, exist_ok=True)  # only once everything above was found usable
    if ctx.main:  # RUN/train.lock while this process writes RUN (the other ranks write nothing)
        held.enter_context(output_lock(run.dir, "avel train", lock_path=run.dir / "train.lock", hint=BUSY))
    _start_or_resume(run)
    _train_epochs(run)
    distributed.barrier()  # best.pt is written before any rank reads it
    complexity = {"base_parameters": run.base_parameters, "peak_mib": peak_memory_mib(device)}
    results = _finish(run.dir, run.cfg, data, device, run.best, log, ctx.main, complexity, layout)
    distributed.close()
    return results


@dataclass
class Run:
    """One training run between its steps: what ``_build_run`` made and where the epochs stand."""

    cfg: TrainConfig
    ctx: distributed.Dist
    device: torch.device
    data: DataSplits
    generator: torch.Generator
    model: nn.Module  # under DDP when several ranks train it (``distributed.unwrap`` gives the model)
    kwargs: dict[str, Any]  # model_kwargs: the checkpoint rebuilds the model from them
    base_parameters: int  # before a balancer adds its layers
    balancer: Balancer
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    log: Callable[[str], None]
    start_epoch: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"val_accuracy": -1.0, "epoch": -1})

    @property
    def dir(self) -> Path:
        return Path(self.cfg.out)


def _setup(cfg: TrainConfig) -> tuple[TrainConfig, distributed.Dist, torch.device]:
    """Validate ``cfg``, join the process group, pick the device and the run directory (the saved config
    names its own directory); nothing is read or written yet."""
    if not cfg.data:
        raise ValueError("no data file given (avel train DATA.h5 or `data = ...` in the config)")
    config_mod.validate(cfg)
    ctx, device_name = distributed.init(cfg.device)
    if cfg.batch_size % ctx.world:
        raise ValueError(
            f"--batch-size {cfg.batch_size} is the global batch: it must divide by the {ctx.world} processes"
        )
    if ctx.world > 1 and cfg.encoder_threads > 1:
        raise ValueError("encoder_threads = 2 runs in one process: set encoder_threads = 1 under --nproc")
    device = config_mod.resolve_device(device_name)
    if device.type == "cpu":
        keep_freed_memory()  # no page faults of every step's activations afresh: the same numbers, faster
    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"{run_dir}: is a file; --out names the run directory")
    return config_mod.apply(cfg, {"out": str(run_dir)}, "run"), ctx, device


def _prepare_data(
    cfg: TrainConfig, device: torch.device, ctx: distributed.Dist, log: Callable[[str], None]
) -> DataSplits:
    """The splits as ``cfg``'s model family reads them, checked, test sealed under the clean protocol, and
    this rank's shard of train under several processes."""
    data = load_splits(
        cfg.data,
        family=cfg.model,
        device=device,
        frames=cfg.frames,
        augment=cfg.augment,
        augment_audio=cfg.augment_audio,
        eval_frames=cfg.eval_frames,
        audio_norm=cfg.audio_norm,
    )
    for split, n in data.meta.get("skipped_no_event", {}).items():
        log(f"{cfg.data}: skipped {n} {split} video(s) without an event segment (no clip sample)")
    check_splits(cfg, data)
    if cfg.protocol == "released":
        log(released_label(cfg))
    else:
        data.test.seal(CLEAN_SEAL)  # any read of test before _finish raises
    if ctx.active:
        data.train = distributed.shard_split(
            data.train, distributed.shard_rows(len(data.train), ctx.rank, ctx.world, cfg.seed)
        )
    return data


def _build_run(
    cfg: TrainConfig,
    ctx: distributed.Dist,
    device: torch.device,
    data: DataSplits,
    generator: torch.Generator,
    log: Callable[[str], None],
) -> Run:
    """The model (initialised, with its balancer's layers, under DDP where it applies), the balancer, the
    optimizer and the schedule."""
    kwargs = model_kwargs(cfg, data)
    model = build_model(**_build_args(kwargs)).to(device)
    base_parameters = sum(p.numel() for p in model.parameters())
    initialise(model, cfg, log, resuming=(Path(cfg.out) / "last.pt").exists())
    balancer = make_balancer(cfg, model)
    model = balancer.prepare_model(model).to(device)
    if cfg.compile:  # in place: the same parameters, state_dict keys and checkpoints
        compile_encoders(model, log)
    model = distributed.wrap(
        model, ctx, balancer=cfg.balance, find_unused=_find_unused(cfg), sync_bn=cfg.sync_bn
    )
    optimizer = build_optimizer(cfg, model.parameters())
    scheduler = build_scheduler(cfg, optimizer)
    return Run(
        cfg, ctx, device, data, generator, model, kwargs, base_parameters, balancer, optimizer, scheduler, log
    )


def _cpu_conv_layout(run: Run, held: contextlib.ExitStack) -> tuple[TrainConfig, dict[str, Any] | None]:
    """``cpu_conv_layout = "channels_last"`` on CPU: the probe's verdict on this run's training batch shapes
    (avel.engine.conv_probe, cached per machine); where it proves them, those passes run channels_last for
    the rest of the run, else the run trains NCHW after one warning line. Returns the config with the layout
    the run uses (the saved config's) and what results.json keeps (None: nothing to decide)."""
    cfg = run.cfg
    if cfg.cpu_conv_layout == "nchw" or run.device.type != "cpu":
        return cfg, None
    amp = cfg.amp and bf16_supported(run.device)
    batch = cfg.batch_size // run.ctx.world
    verdict = conv_probe.verdict_for(_build_args(run.kwargs), run.data.train, batch, amp)
    how = f"cached verdict, {conv_probe.cache_dir()}" if verdict.cached else f"probe {verdict.seconds:.1f} s"
    if verdict.layout != "channels_last":
        run.log(f"warning: channels_last refused: {verdict.reason} ({how}); training NCHW")
        return config_mod.apply(cfg, {"cpu_conv_layout": "nchw"}, "probe"), {
            "requested": "channels_last",
            **verdict.record(),
        }
    state = held.enter_context(cpu_channels_last(frozenset(verdict.proven)))
    run.log(f"channels_last CPU convolutions for the training steps: {verdict.reason} ({how})")
    return cfg, {"requested": "channels_last", **verdict.record(), "encoder_passes": state.passes}


def _start_or_resume(run: Run) -> None:
    """Resume from ``last.pt`` when the run directory holds one (same configuration, metrics trimmed to
    it), else start ``metrics.jsonl``; then save the resolved config."""
    metrics_path, last = run.dir / "metrics.jsonl", run.dir / "last.pt"
    if last.exists():
        ckpt = load_checkpoint(last, map_location=run.device)
        _check_resumable(ckpt["config"], run.cfg, run.dir)
        distributed.unwrap(run.model).load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scheduler.load_state_dict(ckpt["scheduler"])
        run.balancer.load_state_dict(ckpt["balancer"])
        set_rng_state(ckpt["rng"], run.generator)
        run.start_epoch, run.best = ckpt["epoch"] + 1, ckpt["best"]
        if run.ctx.main:
            _trim_metrics(metrics_path, run.start_epoch)
        run.log(f"resuming {run.dir} at epoch {run.start_epoch}")
    elif run.ctx.main:
        metrics_path.write_text("")
    if run.ctx.main:
        config_mod.save_config(run.cfg, run.dir / "config.toml")


def _train_epochs(run: Run) -> None:
    """The epochs left: train, evaluate, log, checkpoint (rank 0 writes)."""
    bar = _Progress(run.cfg.progress and run.ctx.main)
    board = TensorBoardLog(run.dir) if run.cfg.tensorboard and run.ctx.main else None
    reset_peak_memory(run.device)
    for epoch in range(run.start_epoch, run.cfg.epochs):
        line = _run_epoch(run, epoch, bar)
        improved = line.get("val_accuracy", -1.0) > run.best["val_accuracy"]
        if improved:
            run.best = {"val_accuracy": line["val_accuracy"], "epoch": epoch}
        run.log(_summary(line, run.best, tuple(run.data.meta["modalities"])))
        if run.ctx.main:
            _record(run, line, board, improved)
    if board is not None:
        board.close()


def _run_epoch(run: Run, epoch: int, bar: _Progress) -> dict[str, Any]:
    """One epoch: the balancer's epoch start, the training steps, the schedule, val (and test under the
    released protocol); returns its metrics line."""
    cfg, data, model = run.cfg, run.data, run.model
    t0 = time.perf_counter()
    run.balancer.on_epoch_start(distributed.unwrap(model), data, epoch)
    t_proto = time.perf_counter() - t0
    order = distributed.epoch_generator(cfg.seed, epoch, run.ctx.rank) if run.ctx.active else run.generator
    try:
        per_step = run.scheduler if cfg.lr_step_unit == "iteration" else None
        bar_step = bar.start(epoch, len(data.train))
        logs = train_one_epoch(model, run.balancer, data.train, run.optimizer, cfg, order, bar_step, per_step)
        if not params_finite(model):
            raise NonFiniteError(-1, torch.zeros(0), "a parameter is not finite after the epoch's last step")
    except NonFiniteError as e:
        raise _stopped(e, epoch, cfg, run.dir, record=run.ctx.main) from None
    finally:
        bar.stop()
    logs.update(run.balancer.epoch_logs())
    logs = distributed.mean_logs(logs)
    if cfg.lr_step_unit == "epoch":
        run.scheduler.step()
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    t_train = time.perf_counter() - t0
    line: dict[str, Any] = {"epoch": epoch, "lr": run.optimizer.param_groups[0]["lr"], **logs}
    if epoch % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:  # epochs 0, N, 2N, ... (AVEL ref.) + last
        modalities = modality_epoch(cfg, epoch)
        val = evaluate_split(distributed.unwrap(model), data, data.val, cfg, with_modalities=modalities)
        line.update({f"val_{k}": v for k, v in val.items()})
    if cfg.protocol == "released":
        test = released_test(distributed.unwrap(model), data, cfg, epoch)
        line.update({f"test_{k}": v for k, v in test.items()})
    line.update(
        {
            "time_s": time.perf_counter() - t0,
            "train_time_s": t_train,
            "prototype_time_s": t_proto,
            "samples_per_s": run.ctx.world * len(data.train) / max(t_train, 1e-9),
        }
    )
    return line


def _record(run: Run, line: dict[str, Any], board: TensorBoardLog | None, improved: bool) -> None:
    """The epoch's metrics line (metrics.jsonl, TensorBoard) and its checkpoint: ``last.pt``, and
    ``best.pt`` when val improved."""
    with (run.dir / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(line) + "\n")
    if board is not None:
        board.write(line)
    state = {
        "model": distributed.unwrap(run.model).state_dict(),
        "model_kwargs": run.kwargs,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "balancer": run.balancer.state_dict(),
        "config": config_mod.to_dict(run.cfg),
        "epoch": line["epoch"],
        "best": run.best,
        "rng": rng_state(run.generator),
        "data_meta": {k: run.data.meta[k] for k in DATA_META_KEYS if k in run.data.meta},
        "data_params": _data_params(run.data.meta),
    }
    if improved:
        save_checkpoint(run.dir / "best.pt", state)
    save_checkpoint(run.dir / "last.pt", state)


def _stopped(
    e: NonFiniteError, epoch: int, cfg: TrainConfig, run_dir: Path, record: bool = True
) -> NonFiniteError:
    """The one line of a run stopped by a non-finite step: where, and which checkpoint it keeps; recorded
    in ``RUN/stopped.json`` (``record``: rank 0) so that a grid reports the run instead of re-training it."""
    where = f"epoch {epoch}, {e}" if e.step >= 0 else f"epoch {epoch}: {e.what}"
    kept = f"{run_dir / 'last.pt'} keeps epoch {epoch - 1}" if epoch > 0 else "no checkpoint was written"
    e.args = (
        f"{cfg.data}: training stopped at {where}; {kept} (a smaller --lr, --set grad_clip=..., or "
        "`avel info --verify` on the data may help)",
    )
    if record:
        run_dir.mkdir(parents=True, exist_ok=True)
        stop = {"epoch": epoch, "step": e.step, "what": e.what, "message": e.args[0]}
        write_text_atomic(run_dir / STOPPED, json.dumps(stop, indent=2))
    return e


def _data_params(meta: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "frame_size",
        "frames_per_segment",
        "sample_rate",
        "n_fft",
        "win_length",
        "hop_length",
        "segments",
        "audio_seconds",
        "transform",
        "clip_samples",
    )
    return {k: meta[k] for k in keys if k in meta}


def _summary(line: dict[str, Any], best: dict[str, Any], names: tuple[str, str] = ("audio", "visual")) -> str:
    """One line per epoch; ``names`` are the data's two modalities (gray / colored on CG-MNIST)."""
    parts = [f"epoch {line['epoch']:3d}", f"loss {line.get('loss', float('nan')):.4f}"]
    if "val_accuracy" in line:
        parts.append(f"val {100 * line['val_accuracy']:.2f}%")
    for k, name in zip(("val_audio_accuracy", "val_visual_accuracy"), names, strict=True):
        if k in line:
            parts.append(f"{name} {100 * line[k]:.1f}%")
    if "rho" in line:
        parts.append(f"rho {line['rho']:.2f}")
    if "test_accuracy" in line:
        parts.append(f"TEST {100 * line['test_accuracy']:.2f}% (released protocol)")
    parts.append(f"{line['time_s']:.2f}s ({line['samples_per_s']:.0f} samples/s)")
    parts.append(f"best {100 * best['val_accuracy']:.2f}% @ {best['epoch']}")
    return " | ".join(parts)


def _silent(_: str) -> None:
    """The log of ranks other than 0."""


def _find_unused(cfg: TrainConfig) -> bool:
    """DDP must look for parameters without a gradient: every configuration but the ones known to use all
    of them (both modalities, a late fusion)."""
    full = cfg.modality == "both"
    return not (full and cfg.fusion in ("concat", "sum", "film", "gated", "dmrn"))


def run_measures(
    model: AVModel, data: DataSplits, cfg: TrainConfig, run_dir: Path, complexity: dict[str, Any]
) -> dict[str, Any]:
    """BalanceBenchmark's measures of the selected model: the probe and Shapley values need both
    modalities (a uni-modal run gets performance and complexity only); epoch times from metrics.jsonl
    (every epoch, resumed or not). Under several processes rank 0 probes its own shard of train."""
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    times = [ln["train_time_s"] for ln in lines if "train_time_s" in ln]
    return balance_measures(
        model,
        data,
        base_parameters=complexity.get("base_parameters"),
        epoch_times=times,
        peak_mib=complexity.get("peak_mib"),
        seed=cfg.seed,
        both=cfg.modality == "both",
    )


def _finish(
    run_dir: Path,
    cfg: TrainConfig,
    data: DataSplits,
    device,
    best,
    log,
    main: bool = True,
    complexity: dict[str, Any] | None = None,
    layout: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Test, once each, the checkpoint selected on val and the last epoch's (every rank evaluates; rank 0
    writes results.json with BalanceBenchmark's measures of the val-selected checkpoint, ``measures``).
    Under the released protocol ``test_accuracy`` is the best test epoch's."""
    data.test.seal(None)  # training is over: test is read from here on
    model, _ = model_from_checkpoint(run_dir / "best.pt", device)
    test = evaluate_split(model, data, data.test, cfg, with_modalities=True)
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    last = lines[-1] if lines else {"epoch": best["epoch"]}
    if last["epoch"] != best["epoch"]:
        last_model, _ = model_from_checkpoint(run_dir / "last.pt", device)
        last_test = evaluate_split(last_model, data, data.test, cfg, with_modalities=True)
    else:
        last_test = test
    results = {
        "run_dir": str(run_dir),
        "protocol": cfg.protocol,
        "selected_on": "val",
        "best_epoch": best["epoch"],
        "val_accuracy": best["val_accuracy"],
        "test_accuracy": test["accuracy"],
        "modalities": list(data.meta["modalities"]),
        **{f"test_{k}": v for k, v in test.items() if k != "accuracy"},
        # the last epoch of the fixed schedule, tested once too
        "last_epoch": last["epoch"],
        "last_val_accuracy": last.get("val_accuracy"),
        **{f"last_test_{k}": v for k, v in last_test.items()},
        **({"last_rho": last["rho"]} if "rho" in last else {}),
        "config": config_mod.to_dict(cfg),
        "provenance": provenance(device),
        **({"cpu_conv_layout": layout} if layout else {}),
    }
    if cfg.protocol == "released":
        results.update(released_results(lines, test["accuracy"], best["epoch"], released_label(cfg)))
    if model.background is not None:
        results["test_always_background"] = float((data.test.labels == model.background).float().mean())
    if main and cfg.measures:
        results["measures"] = run_measures(model, data, cfg, run_dir, complexity or {})
    if main:
        write_text_atomic(run_dir / "results.json", json.dumps(results, indent=2))
        (run_dir / STOPPED).unlink(missing_ok=True)  # an earlier stop of this run, now finished
    if cfg.protocol == "released":
        log(
            f"test accuracy {100 * results['test_accuracy']:.2f}% at the best TEST epoch "
            f"{results['best_test_epoch']} ({released_label(cfg)}) -> {run_dir}"
        )
        return results
    log(
        f"test accuracy {100 * test['accuracy']:.2f}% (selected on val at epoch {best['epoch']}), "
        f"{100 * last_test['accuracy']:.2f}% at the last epoch {last['epoch']} -> {run_dir}"
    )
    return results


def released_results(
    lines: list[dict[str, Any]], val_selected: float, val_epoch: int, label: str = RELEASED_LABEL
) -> dict[str, Any]:
    """results.json of the released protocol: the best test epoch's figures (the released script logs test
    every epoch and has no validation split), labelled; the val-selected epoch and its test accuracy kept
    beside them (``best_epoch`` stays best.pt's epoch: the val-selected one)."""
    tested = [ln for ln in lines if "test_accuracy" in ln]
    top = max(tested, key=lambda ln: ln["test_accuracy"])  # the first epoch reaching the maximum
    figures = {k[5:]: v for k, v in top.items() if k.startswith("test_") and k != "test_accuracy"}
    return {
        "reads_test_while_training": True,
        "label": label,
        "selected_on": "best test epoch (released protocol)",
        "val_selected_test_accuracy": val_selected,
        "val_selected_epoch": val_epoch,
        "test_accuracy": top["test_accuracy"],
        "best_test_epoch": top["epoch"],
        **{f"best_test_epoch_{k}": v for k, v in figures.items()},
        **({"best_test_epoch_rho": top["rho"]} if "rho" in top else {}),
    }
