"""Training configuration: one dataclass, loaded from a TOML file (or a shipped config by name, from
``avel/configs/``) and overridden on the command line.

Precedence: dataclass defaults < config file < command-line options. Unknown keys are errors that list the
valid keys, so a typo in a config file never silently trains the wrong model.

Each balancer's options are its own typed dataclass (``avel.balance``), held in ``TrainConfig.balancers``
by table. The one mapping between a table and flat keys: option ``NAME`` of table ``T`` is ``[T] NAME``
in a TOML file and ``T_NAME`` as a flat key (``[pmr] alpha = 2`` is ``pmr_alpha = 2``; ``--pmr-alpha``,
``--set pmr_alpha=2``, a grid's overrides and the configs that runs saved before the tables all use the
flat form). OGM-GE and OGM share the table ``[ogm]``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avel.balance.base import UNSET  # noqa: F401 (the sentinel of options left to the method's own default)
from avel.data.splits import AUDIO_NORMS
from avel.models.classifier import MMTM_HEADS
from avel.models.encoders import AUDIO_POOLS, CG_STEMS
from avel.models.intermediate import MMTM_GATES
from avel.models.threads import ENCODER_THREADS
from avel.rules import AT_LEAST_1, NON_NEGATIVE, POSITIVE, UNIT, Rule, one_of, refusal

if TYPE_CHECKING:
    import torch


@dataclass
class TrainConfig:
    # data and model
    data: str = ""  # an avel HDF5 file: preprocess output (end-to-end) or a features file
    model: str = "avel"  # avel (temporal localizer) | resnet18 (clip classifier)
    fusion: str = "concat"  # avel: concat | dmrn; resnet18: concat | sum | film | gated | mmtm | centralnet
    mmtm_gate: str = "paper"  # MMTM gates: paper (2·sigmoid) | code (sigmoid, the released code)
    mmtm_head: str = "concat"  # after MMTM: concat | mean (of two uni-modal heads, the released code)
    centralnet_unimodal_loss: bool = True  # CentralNet: uni-modal heads' losses added (the paper)
    modality: str = "both"  # both | audio | visual (uni-modal baselines)
    width: int = 64  # ResNet18 base width (64 = standard; 8-16 for CPU runs)
    pretrained: bool = False  # torchvision ImageNet weights for the visual ResNet18
    compress: bool = False  # resnet18: the released PMR backbone's compress/recover block after layer2
    cg_stem: str = "layers"  # cgmnist: input BN + first conv as modules | fused (one conv: faster on CPU)
    frames: int = 4  # resnet18 family: frames per clip sample (4 for AVE, 3 of 10 for CREMA-D)
    eval_frames: int = 0  # clip files (avel-clips): frames per clip at evaluation, 0 = all stored
    augment: bool = True  # train-time augmentation of frames (on the device)
    augment_audio: bool = False  # train-time SpecAugment masks on spectrograms (end to end)
    audio_norm: str = "clip"  # resnet18: clip (standardise the clip, tile the span) | tiled (tile, then; PMR)
    audio_pool: str = "mean"  # avel e2e audio encoder: mean (freq. and time) | freq (bands kept) | freq_bn
    # optimisation
    optimizer: str = "adam"  # sgd | adam | adagrad
    lr: float = 1e-3
    momentum: float = 0.9  # sgd
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam
    schedule: str = "none"  # none | step | multistep | cosine (stepped once per epoch, or see lr_step_unit)
    step_size: int = 15  # step: epochs between decays
    milestones: list[int] = field(default_factory=lambda: [70])  # multistep: epochs of decay
    lr_gamma: float = 0.1
    lr_step_unit: str = "epoch"  # epoch | iteration: step_size / milestones count optimizer steps (AVEL ref.)
    shuffle: bool = True  # false: the same batch order every epoch (the split's row order), as the AVEL ref.
    init: str = "default"  # default (PyTorch's) | reference (Xavier-uniform where AVE-ECCV18 applies it)
    init_from: str = ""  # a checkpoint (RUN/best.pt): its weights of matching name and shape start the run
    batch_size: int = 64
    epochs: int = 30
    grad_clip: float = 0.0  # 0 = off
    # run
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = False  # bf16 autocast on CUDA or a CPU with native bf16 (AVX512-BF16 / AMX)
    compile: bool = False  # the encoders under torch.compile for the training steps (avel.engine.compiling)
    # CPU convolutions of the training steps: nchw | channels_last (only where a probe in a subprocess proved
    # the run's batch shapes on this machine, else NCHW with a warning: avel.engine.conv_probe); CUDA: always
    # channels_last. The saved config holds the layout the run used.
    cpu_conv_layout: str = "nchw"
    encoder_threads: int = 1  # 2: a late fusion's two encoders on two CPU threads (the same numbers; faster)
    # clean: prototypes from train, test read once per reported model (the val-selected and the last epoch);
    # released: PMR's released script (test every epoch, the best test epoch reported; prototypes from a tenth
    # of test on CG-MNIST, a fresh tenth of train on resnet18/CREMA-D): a labelled measurement that reads the
    # test split while training, never a default
    protocol: str = "clean"
    out: str = ""  # run directory (default: runs/<model>-<fusion>-<balance>-s<seed>-<time>)
    eval_every: int = 1  # evaluate on val at epochs 0, N, 2N, ... (the AVEL reference: 5) and at the last
    modality_eval_every: int = 0  # each modality's prototype accuracy on val every N epochs (0: last only)
    progress: bool = True
    measures: bool = True  # BalanceBenchmark's measures in results.json (linear probe, Shapley, complexity)
    sync_bn: bool = False  # several processes (torchrun): BatchNorm statistics over the global batch
    tensorboard: bool = False  # TensorBoard event files beside metrics.jsonl (rank 0; needs tensorboard)
    # rebalancing: a name of avel.balance.BALANCERS (none, pmr, ogm-ge, ...: `avel balancers` lists them)
    balance: str = "none"
    # every balancer's options by table ([pmr] alpha, flat key pmr_alpha): defaults in each balancer's Options
    balancers: dict[str, Any] = field(default_factory=lambda: default_balancer_options())


BALANCERS_FIELD = "balancers"


def default_balancer_options() -> dict[str, Any]:
    """Each registered options table with its defaults."""
    from avel.balance import option_tables

    return {table: options_type() for table, options_type in option_tables().items()}


def option_keys() -> dict[str, tuple[str, dataclasses.Field]]:
    """Each balancer option's flat key -> (table, its field): ``pmr_alpha`` -> ("pmr", alpha)."""
    from avel.balance import BALANCERS

    return _option_keys(tuple(BALANCERS.values()))


@functools.lru_cache(maxsize=16)
def _option_keys(registered: tuple[type, ...]) -> dict[str, tuple[str, dataclasses.Field]]:
    """``option_keys`` of these registered balancers (asked for per key: computed once per registry)."""
    from avel.balance import table_of

    return {
        f"{table_of(cls)}_{f.name}": (table_of(cls), f)
        for cls in registered
        for f in dataclasses.fields(cls.Options)
    }


def general_names() -> list[str]:
    """The config's own keys (the balancers' options aside)."""
    return [f.name for f in dataclasses.fields(TrainConfig) if f.name != BALANCERS_FIELD]


def field_names() -> list[str]:
    """Every flat key a config takes: its own and each balancer option's (``pmr_alpha``)."""
    return [*general_names(), *option_keys()]


def value_of(cfg: TrainConfig, key: str) -> Any:
    """The value of a flat key in ``cfg``: ``lr``, or a balancer option's ``pmr_alpha``."""
    if key in option_keys():
        table, f = option_keys()[key]
        return getattr(cfg.balancers[table], f.name)
    return getattr(cfg, key)


def default_of(key: str) -> Any:
    if key in option_keys():
        table, f = option_keys()[key]
        return f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return getattr(TrainConfig(), key)


def _coerce(name: str, value: Any) -> Any:
    """Convert a value (possibly a CLI string) to the type of the field's default; a value of another
    type (``lr = "fast"``, ``epochs = 1.5``) raises ValueError saying which type is expected."""
    default = default_of(name)
    if isinstance(value, str) and not isinstance(default, str):
        if isinstance(default, bool):
            if value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError("expected true or false")
            return value.lower() in {"true", "1", "yes"}
        if isinstance(default, list):
            items = [v for v in value.replace(" ", "").strip("[]").split(",") if v]
            return [_scalar(type(default[0]) if default else str, v) for v in items]
        return _scalar(type(default), value)
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ValueError(f"expected a list like {json.dumps(default)}")
        return [_scalar(type(default[0]) if default else str, v) for v in value]
    if isinstance(default, str):
        if isinstance(value, list | dict | bool):
            raise ValueError("expected a string")
        return str(value)
    if default is None:
        return value
    return _scalar(type(default), value)


TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def _scalar(kind: type, value: Any) -> Any:
    """``value`` as ``kind`` (bool, int, float or str), strings parsed; anything else is an error."""
    try:
        if kind is bool and isinstance(value, bool) or kind is str and isinstance(value, str):
            return value
        if kind in (int, float) and not isinstance(value, bool):
            if isinstance(value, str):
                return kind(value)
            if isinstance(value, int) or kind is float and isinstance(value, float):
                return kind(value)
    except ValueError:
        pass
    raise ValueError(f"expected {TYPE_NAMES.get(kind, kind.__name__)}")


def apply(
    cfg: TrainConfig, values: dict[str, Any], source: str, lines: dict[str, int] | None = None
) -> TrainConfig:
    """Return ``cfg`` with ``values`` applied, each checked for its type and range; errors name ``source``
    (a file, with the key's line from ``lines``, or the command line, with the option's name)."""
    names = set(field_names())
    unknown = sorted(k for k in values if k.replace("-", "_") not in names)
    if unknown:
        raise ValueError(f"{source}: unknown config key(s) {unknown}; valid keys: {sorted(names)}")
    values = {k.replace("-", "_"): v for k, v in values.items() if v is not None}
    changes, balancers, options = {}, dict(cfg.balancers), option_keys()
    for key, value in values.items():
        try:
            value = _coerce(key, value)
            check_value(key, value)
        except ValueError as e:
            raise ValueError(f"{_where(source, key, lines)}: {e}") from None
        if key in options:
            table, f = options[key]
            balancers[table] = dataclasses.replace(balancers[table], **{f.name: value})
        else:
            changes[key] = value
    return dataclasses.replace(cfg, **changes, balancers=balancers)


def _where(source: str, key: str, lines: dict[str, int] | None) -> str:
    if source == "command line":
        return f"--{key.replace('_', '-')}"
    line = (lines or {}).get(key)
    return f"{source}:{line}: {key}" if line else f"{source}: {key}"


def _key_lines(text: str) -> dict[str, int]:
    """The line of each key of a TOML file (flat name: ``[pmr] alpha`` -> ``pmr_alpha``)."""
    out, section = {}, ""
    for i, line in enumerate(text.splitlines(), 1):
        m = re.match(r"\s*\[\s*([A-Za-z0-9_-]+)\s*\]", line)
        if m:
            section = m.group(1) + "_"
            continue
        m = re.match(r"\s*([A-Za-z0-9_-]+)\s*=", line)
        if m:
            out.setdefault(f"{section}{m.group(1)}".replace("-", "_"), i)
    return out


def read_toml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """A TOML config file as flat keys and each key's line; a syntax error names the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text (UTF-8) file") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        where = f"{path}:{m.group(1)}" if m else str(path)
        raise ValueError(f"{where}: invalid TOML: {str(e).split(' (at line')[0]}") from None
    flat = {k: v for k, v in table.items() if not isinstance(v, dict)}
    for section, sub in table.items():  # [pmr] alpha = 2  ->  pmr_alpha
        if isinstance(sub, dict):
            flat.update({f"{section}_{k}".replace("-", "_"): v for k, v in sub.items()})
    return flat, _key_lines(text)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults < TOML file < overrides (None values in overrides mean "not given"); each value's type and
    range checked."""
    cfg = TrainConfig()
    if path:
        path = resolve_config(path)
        flat, lines = read_toml(path)
        cfg = apply(cfg, flat, str(path), lines)
    if overrides:
        cfg = apply(cfg, overrides, "command line")
    return cfg  # choices that depend on each other (fusion of the family): ``validate``, before training


SHIPPED = Path(__file__).parents[1] / "configs"  # package data: installed with avel


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in SHIPPED.glob("*.toml"))


def resolve_config(path: str | Path) -> Path:
    """A config file by path, else a shipped config by name from anywhere: ``table4_avel``,
    ``table4_avel.toml`` or ``configs/table4_avel.toml`` (the repository's old spelling)."""
    path = Path(path)
    if path.is_file():
        return path
    shipped = SHIPPED / f"{path.name.removesuffix('.toml')}.toml"
    if shipped.is_file() and (len(path.parts) == 1 or path.parent.name == "configs"):
        return shipped
    raise FileNotFoundError(
        f"config file not found: {path} (shipped configs, usable by name: {', '.join(shipped_configs())})"
    )


# ------------------------------------------------------------------------------------------ checking

OPTIMIZERS = ("sgd", "adam", "adagrad")
SCHEDULES = ("none", "step", "multistep", "cosine")
LR_STEP_UNITS = ("epoch", "iteration")
INITS = ("default", "reference")
PROTOCOLS = ("clean", "released")
CPU_CONV_LAYOUTS = ("nchw", "channels_last")
# each key's allowed values (avel.rules: one list of values and one message form per choice)
RULES: dict[str, Rule] = {
    "width": AT_LEAST_1,
    "frames": AT_LEAST_1,
    "audio_norm": one_of(*AUDIO_NORMS),
    "audio_pool": one_of(*AUDIO_POOLS),
    "cg_stem": one_of(*CG_STEMS),
    "mmtm_gate": one_of(*MMTM_GATES),
    "mmtm_head": one_of(*MMTM_HEADS),
    "optimizer": one_of(*OPTIMIZERS),
    "lr": POSITIVE,
    "momentum": UNIT,
    "weight_decay": NON_NEGATIVE,
    "betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    "schedule": one_of(*SCHEDULES),
    "step_size": AT_LEAST_1,
    "milestones": (lambda v: all(m >= 1 for m in v), "epochs >= 1"),
    "lr_gamma": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "lr_step_unit": one_of(*LR_STEP_UNITS),
    "init": one_of(*INITS),
    "batch_size": AT_LEAST_1,
    "epochs": AT_LEAST_1,
    "grad_clip": NON_NEGATIVE,
    "device": (lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v), "auto, cpu, cuda or cuda:N"),
    "protocol": one_of(*PROTOCOLS),
    "cpu_conv_layout": one_of(*CPU_CONV_LAYOUTS),
    "encoder_threads": one_of(*ENCODER_THREADS),
    "eval_every": AT_LEAST_1,
    "modality_eval_every": NON_NEGATIVE,
}  # each balancer option's rule is in its Options field (avel.balance.base.option)


def check_value(key: str, value: Any) -> None:
    """ValueError saying the allowed range when ``value`` is outside the one of ``key``."""
    from avel.balance.base import check_option

    if value == default_of(key):  # a default is always allowed (e.g. a sentinel)
        return
    if key in option_keys():
        check_option(option_keys()[key][1], value)
        return
    rule = RULES.get(key)
    if rule is not None and not rule[0](value):
        raise ValueError(refusal(value, rule))


def validate(cfg: TrainConfig) -> None:
    """Every value in its range and the choices consistent with each other (fusion of the model family,
    balancer name), before anything is read or written; errors name the key (option) and what is allowed."""
    from avel.balance import BALANCERS
    from avel.families import FAMILIES, switch_families

    for key in [*RULES, *option_keys()]:
        try:
            check_value(key, value_of(cfg, key))
        except ValueError as e:
            raise ValueError(f"{key} (--{key.replace('_', '-')}): {e}") from None
    family = FAMILIES.get(cfg.model)
    choices = {
        "model": list(FAMILIES),
        "fusion": list(family.fusions if family else ()),
        "modality": ["both", "audio", "visual", *(family.modality_names if family else ())],
        "balance": ["none", *BALANCERS],
    }
    for key, valid in choices.items():
        if getattr(cfg, key) not in valid:
            where = f" for --model {cfg.model}" if key == "fusion" else ""
            rule = one_of(*dict.fromkeys(valid))
            raise ValueError(f"{key} (--{key}){where}: {refusal(getattr(cfg, key), rule)}")
    if cfg.compress and family is not None and "compress" not in family.switches:
        raise ValueError(
            f"compress = true is the ResNet18 backbone's block: --model "
            f"{' / '.join(switch_families('compress'))}, not {cfg.model}"
        )
    if cfg.cg_stem != "layers" and family is not None and "cg_stem" not in family.switches:
        takers = " / ".join(switch_families("cg_stem"))
        raise ValueError(f"cg_stem (--set cg_stem=...) applies to --model {takers}, not {cfg.model}")
    if cfg.encoder_threads > 1 and getattr(BALANCERS.get(cfg.balance), "differentiates_parameters", False):
        raise ValueError(
            f"encoder_threads = {cfg.encoder_threads} hides the encoders' parameters from "
            f"torch.autograd.grad, which {cfg.balance} takes: set encoder_threads = 1"
        )
    check_compile(cfg)
    if cfg.lr_step_unit == "iteration" and cfg.schedule == "cosine":
        raise ValueError("lr_step_unit = 'iteration' applies to the step and multistep schedules, not cosine")
    check_protocol(cfg)


def check_compile(cfg: TrainConfig) -> None:
    """``compile = true`` where it works: late fusions, one encoder thread, balancers that backpropagate
    each loss once (compiled graphs have no double backward, which LFM takes)."""
    from avel.balance import BALANCERS
    from avel.families import INTERMEDIATE_FUSIONS

    if not cfg.compile:
        return
    if cfg.cpu_conv_layout != "nchw":
        raise ValueError(
            "compile = true keeps CPU convolutions NCHW; cpu_conv_layout = 'channels_last' runs them eagerly "
            "(not measured together): choose one"
        )
    if cfg.encoder_threads > 1:
        raise ValueError("compile = true runs the encoders on one thread: set encoder_threads = 1")
    if cfg.fusion in INTERMEDIATE_FUSIONS:
        raise ValueError(
            f"compile = true compiles whole encoders; --fusion {cfg.fusion} fuses inside them: "
            "train it with compile = false"
        )
    if getattr(BALANCERS.get(cfg.balance), "differentiates_parameters", False):
        raise ValueError(
            f"compile = true: {cfg.balance} takes torch.autograd.grad of its losses with respect to the "
            "parameters (LFM a second derivative, which compiled graphs cannot give): train it with "
            "compile = false"
        )


def check_protocol(cfg: TrainConfig) -> None:
    """Prototypes from test only under the released protocol, and PMR under it takes them where the released
    script does for the model family (its ``released_prototypes``, avel.families): CG-MNIST from a tenth of
    test, the clip classifiers (CREMA-D) from a fresh tenth of train every epoch. A clean run never reads
    test through its prototypes."""
    from avel.balance.pmr import released_source

    test_protos = cfg.balance == "pmr" and cfg.balancers["pmr"].subset == "test"
    if test_protos and cfg.protocol != "released":
        raise ValueError(
            "pmr_subset (--pmr-subset) = 'test' reads the test split while training: only with "
            "protocol = 'released' (a labelled measurement of the released code's protocol)"
        )
    if cfg.protocol != "released" or cfg.balance != "pmr":
        return
    if released_source(cfg.model) == "test" and not test_protos:
        raise ValueError(
            "protocol = 'released' takes PMR's prototypes from test as the released CG-MNIST script: "
            "add --set pmr_subset=test"
        )
    pmr = cfg.balancers["pmr"]
    if released_source(cfg.model) == "train" and (pmr.subset in ("test", "val") or not pmr.redraw):
        raise ValueError(
            f"protocol = 'released' on --model {cfg.model} takes PMR's prototypes as the released CREMA-D "
            "script: a fresh tenth of train every epoch (--set pmr_subset=0.1 --set pmr_redraw=true)"
        )


def balancer_options(cfg: TrainConfig) -> dict[str, Any]:
    """What ``build_balancer(cfg.balance, **...)`` takes: the options of its table and the run's seed."""
    from avel.balance import BALANCERS, table_of

    table = table_of(BALANCERS[cfg.balance]) if cfg.balance in BALANCERS else None
    return {"seed": cfg.seed} | ({"options": cfg.balancers[table]} if table in cfg.balancers else {})


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Every value under its flat key (``pmr_alpha``): what results.json and checkpoints store."""
    flat = {k: v for k, v in dataclasses.asdict(cfg).items() if k != BALANCERS_FIELD}
    for table, options in cfg.balancers.items():
        flat.update({f"{table}_{k}": v for k, v in dataclasses.asdict(options).items()})
    return flat


def save_config(cfg: TrainConfig, path: Path) -> None:
    """The resolved config: ``config.toml`` (every key, valid TOML: ``avel train -c`` re-runs it) and the
    same values as ``config.json`` (flat keys)."""
    from avel.preprocessing.lock import write_text_atomic

    write_text_atomic(path, to_toml(cfg))
    write_text_atomic(path.with_suffix(".json"), json.dumps(to_dict(cfg), indent=2))


def to_toml(cfg: TrainConfig) -> str:
    """Every value of ``cfg``, one ``key = value`` line each: the config's own keys, then each balancer's
    options under its table (``[pmr]``); round-trips through ``load_config``."""
    general = {k: v for k, v in dataclasses.asdict(cfg).items() if k != BALANCERS_FIELD}
    lines = [f"{k} = {_toml_value(k, v)}\n" for k, v in general.items()]
    for table, options in cfg.balancers.items():
        lines.append(f"\n[{table}]\n")
        lines += [f"{k} = {_toml_value(k, v)}\n" for k, v in dataclasses.asdict(options).items()]
    return "".join(lines)


def _toml_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, float):
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(repr(value), repr(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(key, v) for v in value) + "]"
    raise ValueError(f"config key {key!r}: {value!r} has no TOML form (TOML has no null)")


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else the CPU; a named device that this machine lacks is refused."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast pays on this device: CUDA with bf16, or a CPU with native bf16 (AVX512-BF16 / AMX)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
