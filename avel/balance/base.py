"""The rebalancing interface every method implements.

A balancer owns "forward + loss"; the training loop owns backward, gradient edits' position, the
optimizer step and everything after. The loop calls, in this order:

    reason = balancer.applies_to(model)             # None, or why the method cannot train this model
    model = balancer.prepare_model(model)           # once, before the optimizer is built (IPRM adds heads)
    for epoch ...:
        balancer.on_epoch_start(model, data, epoch)  # PMR: prototypes without gradients
        for batch ...:
          for _ in range(balancer.steps_per_batch):        # 1; MLA: one step per modality
            result = balancer.training_loss(model, batch)  # forward + loss (OPM drops, IPRM probes)
            backward(result.loss)
            balancer.before_optimizer_step(model, result)      # OGM-GE: gradient modulation
            optimizer.step()
        logs = balancer.epoch_logs()                 # per-epoch extras (the loop averages result.logs itself)

``BalancerHooks`` holds the no-op defaults, so a method writes only the hooks where it acts.

Each method's options are one typed dataclass (``Options``) whose fields are made by ``option``: default,
help and allowed values written once. The config reads them from the method's TOML table (``[pmr]
alpha = 2``, the flat key ``pmr_alpha``), the CLI and saved configs list them, ``build_balancer`` checks
them (``check_options``).
``DeviceGenerator`` and ``sample_mask_shape`` serve the stochastic methods (dropout, OGM-GE noise, OPM).
Logged values are detached device tensors; nothing here calls ``.item()`` or synchronises per step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from avel.models.base import AVModel, ModelOutput
from avel.rules import (  # noqa: F401 (re-exported: a balancer imports its rules from here)
    AT_LEAST_1,
    NON_NEGATIVE,
    POSITIVE,
    UNIT,
    UNIT_OPEN,
    WINDOW,
    Rule,
    check,
    one_of,
    refusal,
)

if TYPE_CHECKING:
    from avel.data.splits import Batch, DataSplits, SplitData


@dataclass
class StepResult:
    loss: Tensor  # scalar to backpropagate
    output: ModelOutput
    logs: dict[str, Tensor] = field(default_factory=dict)  # detached scalars, averaged over the epoch


class Balancer(Protocol):
    name: str

    def applies_to(self, model: AVModel) -> str | None: ...
    def prepare_model(self, model: AVModel) -> AVModel: ...
    def train_indices(self, train: SplitData) -> Tensor | None: ...
    def on_epoch_start(self, model: AVModel, data: DataSplits, epoch: int) -> None: ...
    def training_loss(self, model: AVModel, batch: Batch) -> StepResult: ...
    def before_optimizer_step(self, model: AVModel, result: StepResult) -> None: ...
    def epoch_logs(self) -> dict[str, float]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


# ------------------------------------------------------------------------------------------- options

# An integer option set to UNSET takes the method's own default (every saved value stays explicit: TOML has
# no null, and a saved config must say what it ran with)
UNSET = -1
LoadRun = Callable[[str, torch.device], tuple[AVModel, dict]]  # a checkpoint -> (model, its record)


# the rules and the one message form live in avel.rules (the config's keys use them too)
def option(default: Any, help: str, rule: Rule | None = None) -> Any:
    """A field of a balancer's ``Options``: its default, its help (CLI, docs) and its allowed values."""
    meta = {"help": help, "rule": rule}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class NoOptions:
    """A method without options (none)."""


def check_option(f: dataclasses.Field, value: Any) -> None:
    """ValueError saying the allowed values when ``value`` is outside the rule of option ``f``."""
    rule = f.metadata.get("rule")
    if rule is not None and not rule[0](value):
        raise ValueError(refusal(value, rule))


def check_options(options: Any, owner: str) -> None:
    """Every option of ``options`` within its rule; errors name ``owner`` (the method) and the option."""
    for f in dataclasses.fields(options):
        try:
            check_option(f, getattr(options, f.name))
        except ValueError as e:
            raise ValueError(f"{owner} {f.name}: {e}") from None


def make_options(options_type: type, options: Any, values: dict[str, Any], name: str, label: str) -> Any:
    """``options`` (default: ``options_type()``) with ``values`` replaced, checked; unknown names refused."""
    if options is not None and type(options) is not options_type:
        raise ValueError(f"balancer {name!r} takes {options_type.__name__}, not {type(options).__name__}")
    valid = sorted(f.name for f in dataclasses.fields(options_type))
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(f"balancer {name!r} does not take option(s) {unknown}; valid options: {valid}")
    options = dataclasses.replace(options if options is not None else options_type(), **values)
    check_options(options, label)
    return options


def task_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy on logits over all samples / segments (background included on AVEL)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))


def output_loss(out: ModelOutput, labels: Tensor) -> Tensor:
    """The model's training loss: the task loss on the fused logits plus that of every auxiliary head."""
    loss = task_loss(out.logits, labels)
    for logits in out.aux_logits:
        loss = loss + task_loss(logits, labels)
    return loss


def weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    """sum(w·v) / max(sum(w), 1): zero, not NaN, when every weight is zero."""
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


class DeviceGenerator:
    """A ``torch.Generator`` made on the device of first use from ``seed``; its state goes to checkpoints."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.generator: torch.Generator | None = None
        self.pending: Tensor | None = None  # a state loaded before the device was known

    def get(self, device: torch.device) -> torch.Generator:
        device = torch.device(device)
        if self.generator is None or self.generator.device != device:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(self.seed)
            if self.pending is not None:
                try:
                    self.generator.set_state(self.pending)
                except RuntimeError:  # state from another device type: start again from the seed
                    self.generator.manual_seed(self.seed)
                self.pending = None
        return self.generator

    def state(self) -> Tensor | None:
        return self.generator.get_state() if self.generator is not None else self.pending

    def load(self, state: Tensor | None) -> None:
        self.generator, self.pending = None, state


def sample_mask_shape(z: Tensor) -> tuple[int, ...]:
    """One draw per sample (B, 1) or per sample-segment (B, T, 1)."""
    return (*z.shape[:-1], 1)


class EpochMeter:
    """Sums detached device scalars over an epoch; ``.item()`` happens once, in ``result()``."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}

    def update(self, logs: dict[str, Tensor]) -> None:
        for k, v in logs.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
            self.counts[k] = self.counts.get(k, 0) + 1

    def result(self) -> dict[str, float]:
        if not self.sums:
            return {}
        keys = list(self.sums)
        values = torch.stack([self.sums[k] / self.counts[k] for k in keys]).tolist()  # one transfer
        self.sums, self.counts = {}, {}
        return dict(zip(keys, values, strict=True))


class BalancerHooks:
    """Default hooks: a method overrides only the points where it acts (as Lightning callbacks do).

    ``state_dict`` saves the epoch and, when the method has one, its device random generator ``rng``.
    """

    name = "hooks"
    method = ""  # its name in tables and messages (PMR, OGM-GE); "" = ``name``
    Options: type = NoOptions  # the typed options (defaults written once, there)
    table = ""  # TOML table of the options and prefix of their flat keys ([pmr] alpha, pmr_alpha); "" = name
    # rows of ``avel ablate balancers``: (label, config overrides beyond ``balance``); () = not in the grid
    grid_rows: tuple[tuple[str, dict[str, Any]], ...] | None = None  # None: one row, labelled ``method``
    # the loop's checkpoint reader (avel.engine.checkpoint.model_from_checkpoint), for methods that read
    # other runs (UMT's teachers); set by the loop, so that no balancer imports the engine
    load_run: LoadRun | None = None
    epoch = 0

    def __init__(self, options: Any = None, *, seed: int = 0, **values: Any) -> None:
        self.options = make_options(self.Options, options, values, self.name, self.method or self.name)
        self.seed = int(seed)

    # training_loss runs the model's forward (``model(audio, visual)``), which DDP's gradient hooks see;
    # methods that call ``encode`` / ``fuse`` / heads directly have their gradients averaged by the loop
    runs_forward = False
    # weighs the modalities on event segments only (background segments have weight 0)
    weighs_event_segments = False
    # optimizer steps the loop takes on each batch (MLA: one per modality), each its own training_loss
    steps_per_batch = 1
    # takes torch.autograd.grad of a loss with respect to the model's parameters (MMPareto, LFM): the
    # encoders must be in the loss's graph, so such a method refuses encoder_threads = 2 (avel.models.threads)
    differentiates_parameters = False

    def applies_to(self, model: AVModel) -> str | None:
        return None  # a reason string when the method cannot run on this model

    def prepare_model(self, model: AVModel) -> AVModel:
        return model

    def train_indices(self, train: SplitData) -> Tensor | None:
        """Rows of the train split the loop trains on; None: all (Gradient-Blending holds some out)."""
        return None

    def event_splits(self) -> tuple[str, ...]:
        """The splits whose event segments a method that ``weighs_event_segments`` reads."""
        return ("train",)

    def on_epoch_start(self, model: AVModel, data: DataSplits, epoch: int) -> None:
        self.epoch = epoch

    def before_optimizer_step(self, model: AVModel, result: StepResult) -> None:
        pass

    def epoch_logs(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        rng = getattr(self, "rng", None)
        return {"epoch": self.epoch} | ({"rng": rng.state()} if rng is not None else {})

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state.get("epoch", 0))
        rng = getattr(self, "rng", None)
        if rng is not None:
            rng.load(state.get("rng"))


class NoBalance(BalancerHooks):
    """Plain joint training: the task loss only."""

    name = "none"
    runs_forward = True
    grid_rows = (("naive", {}),)

    def training_loss(self, model: AVModel, batch: Batch) -> StepResult:
        out = model(batch.audio, batch.visual)
        loss = output_loss(out, batch.labels)
        return StepResult(loss, out, {"loss_ce": loss.detach()})
