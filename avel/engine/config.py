"""Training configuration: one dataclass, loaded from a TOML file (or a shipped config by name, from
``avel/configs/``) and overridden on the command line.

Precedence: dataclass defaults < config file < command-line options. Unknown keys are errors that list the
valid keys, so a typo in a config file never silently trains the wrong model.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    frames: int = 4  # resnet18 family: frames per clip sample (4 for AVE, 3 of 10 for CREMA-D)
    eval_frames: int = 0  # clip files (avel-clips): frames per clip at evaluation, 0 = all stored
    augment: bool = True  # train-time augmentation of frames (on the device)
    augment_audio: bool = False  # train-time SpecAugment masks on spectrograms (end to end)
    audio_norm: str = "clip"  # resnet18: clip (standardise the clip, tile the span) | tiled (tile, then; PMR)
    audio_pool: str = "mean"  # avel e2e audio encoder: mean (over frequency and time) | freq (bands kept)
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
    # clean: prototypes from train, test read once per reported model (the val-selected and the last epoch);
    # released: PMR's released CG-MNIST script (prototypes from a tenth of test, test every epoch, the best
    # test epoch reported): a labelled measurement that reads the test split while training, never a default
    protocol: str = "clean"
    out: str = ""  # run directory (default: runs/<model>-<fusion>-<balance>-s<seed>-<time>)
    eval_every: int = 1  # evaluate on val at epochs 0, N, 2N, ... (the AVEL reference: 5) and at the last
    modality_eval_every: int = 0  # each modality's prototype accuracy on val every N epochs (0: last only)
    progress: bool = True
    measures: bool = True  # BalanceBenchmark's measures in results.json (linear probe, Shapley, complexity)
    sync_bn: bool = False  # several processes (torchrun): BatchNorm statistics over the global batch
    tensorboard: bool = False  # TensorBoard event files beside metrics.jsonl (rank 0; needs tensorboard)
    # rebalancing: none | pmr | ogm-ge | ogm | opm | iprm | dropout | gblend
    #   | mmcosine | umt | ume | mbsd | cml | mmpareto | lfm (BalanceBenchmark's objective-level methods)
    #   | agm | amco | mla | greedy | relearning | valuation | reconboost (its other methods)
    balance: str = "none"
    pmr_alpha: float = 2.0  # Eq. 10
    pmr_mu: float = 1e-3  # Eq. 13
    pmr_reg_epochs: int = 10  # E_r: PER in the first E_r epochs
    pmr_window: list[int] = field(default_factory=lambda: [0, 70])  # PMR active in [start, end], inclusive
    pmr_subset: str = "0.1"  # fraction of train for prototypes, "val", or "test" (protocol = "released" only)
    pmr_momentum: float = 0.0  # ε of Eq. 12
    pmr_coef: str = "paper"  # paper (Eq. 11) | step (released code)
    pmr_absent: str = "mask"  # classes without a prototype: mask (out of softmax/PCE/ρ) | zero (literal)
    pmr_proto_every: int = 0  # high-lr guard: prototypes also from the batches every N steps (0 = off)
    pmr_pce_cap: float = 0.0  # high-lr guard: each PCE term at most cap × the task loss (0 = off)
    ogm_alpha: float = 0.1
    ogm_window: list[int] = field(default_factory=lambda: [0, 50])
    ogm_ge: bool = True  # GE noise: on for ogm-ge and ogm (as BML's script runs it); false: noise-free OGM
    ogm_warmup: int = -1  # epochs without modulation; -1 = the method's own (0 for ogm-ge, 6 for ogm)
    opm_q_base: float = 0.5
    opm_lam: float = 0.5
    opm_p_exe: float = 0.7
    opm_warmup: int = 6  # epochs without modulation (the released code: epoch <= 5)
    iprm_alpha: float = 0.8
    iprm_variant: str = "code"  # code: λ_1 = α/2 + (1−α)ω_0, eval at λ_T | slides: λ_1 = ω_0, at λ_{T+1}
    dropout_p: float = 0.3
    dropout_variant: str = "sample"  # sample (per sample, either modality) | droppathway (audio, per batch)
    gblend_super_epoch: int = 5  # Gradient-Blending: epochs between weight estimates (online G-Blend)
    gblend_holdout: float = 0.1  # fraction of train held out of training to measure G and O
    gblend_predict: str = "fused"  # fused (paper) | mean (of the fused and uni-modal heads)
    mmcosine_scale: float = 10.0  # s: logits s·cos(z^m, W^m_c) (the release's --scaling; BalanceBenchmark 15)
    # cosine loss in [start, end]: every epoch as the release (BalanceBenchmark: [0, 80])
    mmcosine_window: list[int] = field(default_factory=lambda: [0, 1_000_000])
    umt_scale: float = 10.0  # weight of the feature distillation MSE (BalanceBenchmark's scaling)
    umt_window: list[int] = field(default_factory=lambda: [0, 80])
    umt_teacher_audio: str = ""  # best.pt of an `avel train --modality audio` run of the same model
    umt_teacher_visual: str = ""  # best.pt of an `avel train --modality visual` run of the same model
    mbsd_window: list[int] = field(default_factory=lambda: [0, 80])
    mbsd_kl: str = "code"  # code (kl_div on the scores as BalanceBenchmark) | scores (Bernoulli KL)
    cml_lam: float = 0.1  # λ of the confidence penalty
    cml_window: list[int] = field(default_factory=lambda: [0, 80])
    cml_reduce: str = "batch"  # batch (max(0, Σ_i), the code) | sample (Σ_i max(0, ·))
    mmpareto_gamma: float = 1.5  # γ: the integrated gradient's scale
    mmpareto_heads: str = "separate"  # separate (uni-modal heads, released code) | split (BalanceBenchmark)
    mmpareto_window: list[int] = field(default_factory=lambda: [0, 80])
    lfm_alpha: list[float] = field(default_factory=lambda: [0.95, 0.05])  # (α_0, α_1) at the start
    lfm_lr_alpha: float = 1e-4  # η_α, halved at every 20th epoch
    lfm_js: str = "code"  # code (½(KL(m‖p) + KL(m‖q))) | paper (Jensen-Shannon)
    lfm_alpha_data: str = "val"  # rows that fit α_1: val (the code) | train
    lfm_probe_size: int = 8  # that many first rows
    lfm_window: list[int] = field(default_factory=lambda: [0, 80])
    agm_alpha: float = 1.0  # AGM: k = exp(alpha min(optimal ratio - ratio, cap))
    agm_window: list[int] = field(default_factory=lambda: [0, 19])  # the code's epochs 1..20, inclusive
    agm_variant: str = "code"  # code: phi^a = (f(a,v) - f(0,v) + f(a,0))/2 | paper: Shapley with f(0,0)
    agm_cap: float = 10.0
    agm_clip: float = 1.0  # clip to this total norm when a head-weight gradient leaves [-clip, clip]; 0 = off
    amco_sigma: float = 0.5  # AMCo: a modality is dependent above this softmax mass
    amco_eps: float = 0.3  # mask rate sin(pi/2 min(eps, l_t)/eps)
    amco_window: list[int] = field(default_factory=lambda: [0, 80])
    mla_fusion: str = "sample"  # MLA test-time entropy fusion: sample (paper) | batch (released code)
    mla_projection: str = "none"  # none (released code: its test never matches) | paper | balancemm
    greedy_eps: float = 0.01  # Greedy: re-balance when |BDR_a - BDR_v| > eps
    greedy_steps: int = 5  # re-balancing steps per window
    greedy_start: int = 2  # first epoch that may re-balance
    greedy_average: str = "code"  # code: both running averages from the audio gate | own
    relearning_lam: float = 3.0  # ReLearning: alpha = tanh(lam * purity gap)
    relearning_every: int = 20  # re-initialise after epochs e > 0 with e % every == 0 ...
    relearning_times: int = 3  # ... at most this many times
    valuation_warmup: int = 5  # sample-level valuation: epochs on the plain train split first
    valuation_level: str = "sample"  # sample | modality (the paper's modality-level method)
    valuation_part: float = 0.2  # modality level: share of train whose mean contributions give the gaps
    valuation_alpha: float = 1.0  # modality level: re-sampled share = alpha * 2/3 |gap_a - gap_v|
    reconboost_boost_epochs: int = 4  # ReconBoost: epochs boosting one modality per stage ...
    reconboost_correct_epochs: int = 4  # ... then epochs correcting the ensemble
    reconboost_w1: float = 5.0
    reconboost_w2: float = 1.0
    reconboost_alpha: float = 0.5  # weight of the reconcilement term
    reconboost_boost_rate: float = 1.0  # initial beta
    reconboost_reconcile: str = "code"  # code: the term detached on both sides (no gradient) | paper


# An integer option set to UNSET takes the method's own default (every saved value stays explicit: TOML has
# no null, and a saved config must say what it ran with)
UNSET = -1

BALANCER_PREFIX = {
    "pmr": "pmr_",
    "ogm-ge": "ogm_",
    "ogm": "ogm_",
    "opm": "opm_",
    "iprm": "iprm_",
    "dropout": "dropout_",
    "gblend": "gblend_",
    "mmcosine": "mmcosine_",
    "umt": "umt_",
    "mbsd": "mbsd_",
    "cml": "cml_",
    "mmpareto": "mmpareto_",
    "lfm": "lfm_",
    "agm": "agm_",
    "amco": "amco_",
    "mla": "mla_",
    "greedy": "greedy_",
    "relearning": "relearning_",
    "valuation": "valuation_",
    "reconboost": "reconboost_",
}


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def _coerce(name: str, value: Any) -> Any:
    """Convert a value (possibly a CLI string) to the type of the field's default; a value of another
    type (``lr = "fast"``, ``epochs = 1.5``) raises ValueError saying which type is expected."""
    default = getattr(TrainConfig(), name)
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
    changes = {}
    for key, value in values.items():
        try:
            changes[key] = _coerce(key, value)
            check_value(key, changes[key])
        except ValueError as e:
            raise ValueError(f"{_where(source, key, lines)}: {e}") from None
    return dataclasses.replace(cfg, **changes)


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

POSITIVE = (lambda v: v > 0, "> 0")
AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
UNIT = (lambda v: 0 <= v <= 1, "in [0, 1]")
UNIT_OPEN = (lambda v: 0 <= v < 1, "in [0, 1)")
WINDOW = (lambda v: len(v) == 2 and 0 <= v[0] <= v[1], "two epochs [start, end] with 0 <= start <= end")
# each key's allowed values, as (test, words for the message)
RULES: dict[str, tuple[Any, str]] = {
    "width": AT_LEAST_1,
    "frames": AT_LEAST_1,
    "lr": POSITIVE,
    "momentum": UNIT,
    "weight_decay": NON_NEGATIVE,
    "betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    "step_size": AT_LEAST_1,
    "milestones": (lambda v: all(m >= 1 for m in v), "epochs >= 1"),
    "lr_gamma": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "batch_size": AT_LEAST_1,
    "epochs": AT_LEAST_1,
    "grad_clip": NON_NEGATIVE,
    "eval_every": AT_LEAST_1,
    "modality_eval_every": NON_NEGATIVE,
    "optimizer": (lambda v: v in ("sgd", "adam", "adagrad"), "one of sgd, adam, adagrad"),
    "schedule": (
        lambda v: v in ("none", "step", "multistep", "cosine"),
        "one of none, step, multistep, cosine",
    ),
    "device": (lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v), "auto, cpu, cuda or cuda:N"),
    "pmr_alpha": NON_NEGATIVE,
    "pmr_mu": NON_NEGATIVE,
    "pmr_reg_epochs": NON_NEGATIVE,
    "pmr_window": WINDOW,
    "pmr_subset": (
        lambda v: v in ("val", "test") or _fraction(v),
        "'val', 'test' (protocol = 'released') or a fraction of train in (0, 1]",
    ),
    "protocol": (lambda v: v in ("clean", "released"), "clean or released"),
    "pmr_momentum": UNIT_OPEN,
    "pmr_coef": (lambda v: v in ("paper", "step"), "paper or step"),
    "audio_pool": (lambda v: v in ("mean", "freq"), "mean or freq"),
    "ogm_alpha": NON_NEGATIVE,
    "ogm_window": WINDOW,
    "ogm_warmup": (lambda v: v >= 0 or v == UNSET, ">= 0, or -1 for the method's own"),
    "opm_q_base": UNIT,
    "opm_lam": NON_NEGATIVE,
    "opm_p_exe": UNIT,
    "opm_warmup": NON_NEGATIVE,
    "iprm_alpha": UNIT,
    "dropout_p": UNIT_OPEN,
    "mmcosine_window": WINDOW,
    "umt_scale": NON_NEGATIVE,
    "umt_window": WINDOW,
    "mbsd_window": WINDOW,
    "mbsd_kl": (lambda v: v in ("code", "scores"), "code or scores"),
    "cml_lam": NON_NEGATIVE,
    "cml_window": WINDOW,
    "cml_reduce": (lambda v: v in ("batch", "sample"), "batch or sample"),
    "mmpareto_heads": (lambda v: v in ("separate", "split"), "separate or split"),
    "mmpareto_window": WINDOW,
    "lfm_js": (lambda v: v in ("code", "paper"), "code or paper"),
    "lfm_alpha_data": (lambda v: v in ("val", "train"), "val or train"),
    "lfm_probe_size": AT_LEAST_1,
    "lfm_window": WINDOW,
    "agm_alpha": NON_NEGATIVE,
    "agm_window": WINDOW,
    "agm_variant": (lambda v: v in ("code", "paper"), "code or paper"),
    "agm_cap": NON_NEGATIVE,
    "agm_clip": NON_NEGATIVE,
    "amco_sigma": UNIT,
    "amco_eps": (lambda v: v > 0, "> 0"),
    "amco_window": WINDOW,
    "mla_fusion": (lambda v: v in ("sample", "batch"), "sample or batch"),
    "mla_projection": (lambda v: v in ("none", "paper", "balancemm"), "none, paper or balancemm"),
    "greedy_eps": NON_NEGATIVE,
    "greedy_steps": (lambda v: v >= 1, ">= 1"),
    "greedy_start": NON_NEGATIVE,
    "greedy_average": (lambda v: v in ("code", "own"), "code or own"),
    "relearning_lam": NON_NEGATIVE,
    "relearning_every": (lambda v: v >= 1, ">= 1"),
    "relearning_times": NON_NEGATIVE,
    "valuation_warmup": NON_NEGATIVE,
    "valuation_level": (lambda v: v in ("sample", "modality"), "sample or modality"),
    "valuation_part": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "valuation_alpha": NON_NEGATIVE,
    "reconboost_boost_epochs": (lambda v: v >= 1, ">= 1"),
    "reconboost_correct_epochs": NON_NEGATIVE,
    "reconboost_w1": NON_NEGATIVE,
    "reconboost_w2": NON_NEGATIVE,
    "reconboost_alpha": NON_NEGATIVE,
    "reconboost_reconcile": (lambda v: v in ("code", "paper"), "code or paper"),
}


def _fraction(v: str) -> bool:
    try:
        return 0 < float(v) <= 1
    except ValueError:
        return False


def check_value(key: str, value: Any) -> None:
    """ValueError saying the allowed range when ``value`` is outside the one of ``key``."""
    test, allowed = RULES.get(key, (None, ""))
    if value == getattr(TrainConfig(), key, None):  # a default is always allowed (e.g. a sentinel)
        return
    if test is not None and not test(value):
        raise ValueError(f"{json.dumps(value)} is not allowed: must be {allowed}")


def validate(cfg: TrainConfig) -> None:
    """Every value in its range and the choices consistent with each other (fusion of the model family,
    balancer name), before anything is read or written; errors name the key (option) and what is allowed."""
    from avel.balance import BALANCERS
    from avel.models import FUSIONS, MODALITY_NAMES, MODEL_FAMILIES

    for key in RULES:
        if hasattr(cfg, key):
            try:
                check_value(key, getattr(cfg, key))
            except ValueError as e:
                raise ValueError(f"{key} (--{key.replace('_', '-')}): {e}") from None
    choices = {
        "model": list(MODEL_FAMILIES),
        "fusion": list(FUSIONS.get(cfg.model, ())),
        "modality": ["both", "audio", "visual", *MODALITY_NAMES.get(cfg.model, ())],
        "balance": ["none", *BALANCERS],
    }
    for key, valid in choices.items():
        if getattr(cfg, key) not in valid:
            where = f" for --model {cfg.model}" if key == "fusion" else ""
            raise ValueError(
                f"{key} (--{key}) = {getattr(cfg, key)!r}{where}: must be one of {sorted(set(valid))}"
            )
    check_protocol(cfg)


def check_protocol(cfg: TrainConfig) -> None:
    """Prototypes from test only under the released protocol, and PMR under it takes them from test (as
    the released CG-MNIST script): a clean run can never read test through its prototypes."""
    test_protos = cfg.balance == "pmr" and cfg.pmr_subset == "test"
    if test_protos and cfg.protocol != "released":
        raise ValueError(
            "pmr_subset (--pmr-subset) = 'test' reads the test split while training: only with "
            "protocol = 'released' (a labelled measurement of the released code's protocol)"
        )
    if cfg.protocol == "released" and cfg.balance == "pmr" and not test_protos:
        raise ValueError(
            "protocol = 'released' takes PMR's prototypes from test as the released CG-MNIST script: "
            "add --set pmr_subset=test"
        )


def balancer_options(cfg: TrainConfig) -> dict[str, Any]:
    """The options the chosen balancer takes, from the config keys with its prefix (pmr_alpha -> alpha);
    a balancer that takes a ``seed`` gets the run's seed."""
    from avel.balance import balancer_option_names

    prefix = BALANCER_PREFIX.get(cfg.balance)
    if prefix is None:
        return {}
    opts: dict[str, Any] = {}
    for name in balancer_option_names(cfg.balance):
        value = getattr(cfg, prefix + name, None)
        if value is not None and not (value == UNSET and getattr(TrainConfig(), prefix + name) == UNSET):
            opts[name] = value
        elif name == "seed":
            opts[name] = cfg.seed
    if "subset" in opts:
        opts["subset"] = opts["subset"] if opts["subset"] in ("val", "test") else float(opts["subset"])
    if "window" in opts:
        opts["window"] = tuple(opts["window"])
    return opts


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: TrainConfig, path: Path) -> None:
    """The resolved config: ``config.toml`` (every key, valid TOML: ``avel train -c`` re-runs it) and the
    same values as ``config.json``."""
    path.write_text(to_toml(cfg))
    path.with_suffix(".json").write_text(json.dumps(to_dict(cfg), indent=2))


def to_toml(cfg: TrainConfig) -> str:
    """Every field of ``cfg`` as a flat TOML table, one ``key = value`` line each; round-trips through
    ``load_config``."""
    return "".join(f"{k} = {_toml_value(k, v)}\n" for k, v in to_dict(cfg).items())


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
        raise RuntimeError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device
