"""``compile = true``: a model's two encoders under ``torch.compile`` (inductor) for the training steps.

- In place, per encoder instance (its ``forward``): parameters, buffers and ``state_dict`` keys stay the
  eager model's (no ``_orig_mod.``), so checkpoints, resume and ``init_from`` are unchanged.
- One graph per encoder and run: compiled at the first call in training mode with gradients on (the first
  training step), for that call's input shapes (``dynamic=False``). Every other call runs the eager
  ``forward``: a last partial batch, evaluation, PMR's prototype pass, any pass without gradients. So the
  compile time is paid once per run (the same numbers as eager up to float rounding; no random ops in the
  encoders).
- On CPU inductor keeps the convolutions NCHW (``layout_optimization`` off): its own choice there is
  channels_last, the CPU convolution path that segfaults on Intel Xeon and AMD EPYC (#24).
- The backward graph is compiled with the forward, at that first call, so a compiler that cannot run here
  (no C++ compiler for inductor on CPU, a broken toolchain) fails before the step computes anything: avel
  prints one warning line and trains eagerly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from avel.families import INTERMEDIATE_FUSIONS
from avel.models.base import AVModel


def compile_targets(model: AVModel) -> list[nn.Module]:
    """The modules ``compile = true`` compiles: the model's audio and visual encoders (the branches of a late
    fusion, or the AVEL localizer's encoders end to end); ValueError where there are none to compile."""
    base = model.backbone
    if base.fusion_name in INTERMEDIATE_FUSIONS:
        raise ValueError(
            f"compile = true compiles whole encoders; --fusion {base.fusion_name} fuses inside them "
            "(its stages run one by one): train it with compile = false"
        )
    targets = []
    for name in ("audio_branch", "visual_branch"):
        branch = getattr(base, name, None)
        if isinstance(branch, nn.ModuleDict):  # the AVEL localizer: its encoder, then its LSTM
            branch = branch["encoder"] if "encoder" in branch else None
        if branch is not None and any(p.requires_grad for p in branch.parameters()):
            targets.append(branch)
    if not targets:
        raise ValueError(
            "compile = true compiles the model's encoders, and this model trains none (features in, "
            "or a frozen encoder): train it with compile = false"
        )
    return targets


def compile_encoders(model: AVModel, log: Callable[[str], None] = print) -> list[nn.Module]:
    """Compile ``model``'s encoders in place (``compile_targets``); returns them. ``log`` gets the one
    warning line should the compiler fail."""
    targets = compile_targets(model)
    state = _State(log)
    for module in targets:
        module.forward = _Dispatch(module, state)  # an instance attribute: no module, no state_dict entry
    return targets


class _State:
    """What a model's compiled encoders share: the warning's log, and whether the compiler failed (then
    they all run eagerly)."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log, self.failed = log, False


class _Dispatch:
    """An encoder's ``forward``: the compiled graph for the first training call's inputs, else eager."""

    def __init__(self, module: nn.Module, state: _State) -> None:
        eager = type(module).forward.__get__(module)
        cpu = next(module.parameters()).device.type == "cpu"
        options = {"layout_optimization": False} if cpu else {}  # NCHW CPU convolutions (#24)
        self.eager, self.state, self.module, self.key = eager, state, module, None
        self.compiled = torch.compile(eager, dynamic=False, options=options)
        from torch._dynamo.exc import BackendCompilerFailed  # torch.compile imported it
        from torch._functorch import config as functorch_config

        self.failure, self.functorch_config = BackendCompilerFailed, functorch_config

    def __call__(self, *args: Any) -> Tensor:
        if self.state.failed or not (self.module.training and torch.is_grad_enabled()):
            return self.eager(*args)
        key = _call_key(args)
        if self.key is None:
            self.key = key
        if key != self.key:
            return self.eager(*args)
        try:
            with self.functorch_config.patch(force_non_lazy_backward_lowering=True):
                return self.compiled(*args)
        except self.failure as e:
            self.state.failed = True
            reason = " ".join(str(e).split())[:200]
            self.state.log(f"warning: compile = true: torch.compile failed here ({reason}); training eagerly")
            return self.eager(*args)


def _call_key(args: tuple) -> tuple:
    """What one compiled graph is specialised to: the inputs' shapes, dtypes and devices, and autocast."""
    tensors = tuple((tuple(a.shape), a.dtype, a.device) for a in args if isinstance(a, Tensor))
    devices = {a.device.type for a in args if isinstance(a, Tensor)}
    autocast = tuple((d, torch.is_autocast_enabled(d), torch.get_autocast_dtype(d)) for d in sorted(devices))
    return tensors, autocast
