"""BalanceBenchmark's three measures of a trained model (Xu, Cui, Huang, Wang, Hu, 2025, "BalanceBenchmark:
A Survey for Multimodal Imbalance Learning"; toolkit github.com/GeWu-Lab/BalanceBenchmark):

1. performance: accuracy and macro-F1 of the fused prediction (BalanceMM's ``BatchMetricsCalculator``: the
   unweighted mean over classes of per-class F1, a class never predicted and never present counting 0);
2. imbalance degree: how far apart the two uni-modal encoders are, from
   - the linear probe of BalanceMM's ``LinearProbe`` trainer: the trained encoders frozen, a new linear
     head on [z^a; z^v] trained on train (selected on val), and each modality's accuracy from its share
     of that head, z^m W^m + b/2 (``probe_*``); and each encoder probed alone, a linear head on z^m only
     (``probe_*_alone``),
   - the Shapley value of each modality (BalanceMM's ``Calculate_Shapley``, run on test after training):
     v(S) = accuracy with the inputs of the modalities outside S zeroed, φ_a = ½[(v(a) − v(∅)) +
     (v(av) − v(v))], φ_v likewise (``shapley_*``),
   beside avel's prototype accuracies (PMR Eq. 7, ``test_audio_accuracy`` / ``test_visual_accuracy``).
   ``imbalance_degree`` = |probe accuracy of audio − probe accuracy of visual| (in [0, 1]): ours; the
   paper's own definition (and normalisation, if any) is not verified: neither its text nor the toolkit's
   code gives it here (what was searched: docs/deviations.md, "imbalance degree");
3. complexity: training time per epoch (mean of the epochs' ``train_time_s``), peak memory of the training
   process (CUDA: ``max_memory_allocated``; CPU: the peak resident set since the run began, VmHWM after a
   reset) and the parameters a method adds to the base model (heads, class weights).

On AVEL every segment is a sample; the probe's and Shapley's modality accuracies score event segments only
(as the prototype accuracies), the fused ones every segment.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from avel.data.splits import DataSplits, SplitData
from avel.engine import metrics
from avel.engine.evaluate import predict_split
from avel.models.base import AVModel

PROC_STATUS = Path("/proc/self/status")


# -------------------------------------------------------------------------------------------- memory


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or the process's resident-set peak (Linux)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def peak_memory_mib(device: torch.device) -> float | None:
    """The peak since ``reset_peak_memory``: GPU memory allocated, or the CPU process's resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        found = re.search(r"VmHWM:\s+(\d+) kB", PROC_STATUS.read_text())
    except OSError:
        return None
    return int(found.group(1)) / 1024 if found else None


# ----------------------------------------------------------------------------------------- Shapley


@torch.no_grad()
def masked_accuracy(model: AVModel, split: SplitData, keep_audio: bool, keep_visual: bool) -> float:
    """v(S): accuracy of the fused prediction with the inputs of the modalities outside S zeroed."""
    was_training = model.training
    model.eval()
    correct, total = 0.0, 0
    for batch in split.batches(256):
        audio = batch.audio if keep_audio else torch.zeros_like(batch.audio)
        visual = batch.visual if keep_visual else torch.zeros_like(batch.visual)
        pred = model(audio, visual).logits.argmax(-1)
        correct += float((pred == batch.labels).sum())
        total += batch.labels.numel()
    model.train(was_training)
    return correct / max(total, 1)


def shapley_values(model: AVModel, split: SplitData) -> dict[str, float]:
    """φ_a, φ_v: each modality's Shapley value of the accuracy (two players; v(∅) = both inputs zeroed)."""
    v = {
        (a, b): masked_accuracy(model, split, a, b) for a in (False, True) for b in (False, True)
    }  # v(S) for S ⊆ {audio, visual}
    phi_a = 0.5 * ((v[True, False] - v[False, False]) + (v[True, True] - v[False, True]))
    phi_v = 0.5 * ((v[False, True] - v[False, False]) + (v[True, True] - v[True, False]))
    return {"shapley_audio": phi_a, "shapley_visual": phi_v}


# ------------------------------------------------------------------------------------- linear probe


def _features(model: AVModel, split: SplitData) -> tuple[Tensor, Tensor, Tensor]:
    """(z^a, z^v, labels) of every row, flattened per sample (per segment on AVEL), float32 on the CPU."""
    pred = predict_split(model, split)
    flat = (pred[k].reshape(-1, pred[k].shape[-1]).float().cpu() for k in ("z_audio", "z_visual"))
    return *flat, split.labels.reshape(-1).cpu()


def split_probe_logits(head: torch.nn.Linear, z_a: Tensor, z_v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(fused, audio share, visual share) of a linear head on [z^a; z^v]: z^m W^m + b/2 (BalanceMM)."""
    d = z_a.shape[-1]
    w, b = head.weight, head.bias
    la, lv = z_a @ w[:, :d].T + b / 2, z_v @ w[:, d:].T + b / 2
    return la + lv, la, lv


def train_probe(
    x: tuple[Tensor, Tensor],
    x_val: tuple[Tensor, Tensor],
    num_classes: int,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> torch.nn.Linear:
    """A linear head on frozen features ``x`` = (inputs, labels): cross-entropy, Adam, ``epochs`` passes
    in a seeded order, the epoch with the best accuracy on ``x_val`` kept."""
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(x[0].shape[-1], num_classes)
    with torch.no_grad():
        bound = 1.0 / (head.weight.shape[1] ** 0.5)  # nn.Linear's initialisation, from the seed
        head.weight.uniform_(-bound, bound, generator=g)
        head.bias.uniform_(-bound, bound, generator=g)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    best, best_state = -1.0, None
    for _ in range(epochs):
        order = torch.randperm(len(x[0]), generator=g)
        for i in range(0, len(order), batch_size):
            rows = order[i : i + batch_size]
            loss = F.cross_entropy(head(x[0][rows]), x[1][rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = metrics.accuracy(head(x_val[0]).argmax(-1), x_val[1])
        if acc > best:
            best, best_state = acc, {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    return head


def linear_probe(
    model: AVModel,
    data: DataSplits,
    *,
    epochs: int = 30,
    lr: float = 1e-2,
    batch_size: int = 1024,
    seed: int = 0,
) -> dict[str, float]:
    """BalanceMM's ``LinearProbe``: a linear head on the frozen [z^a; z^v] trained on train, selected on
    val; its test accuracy, fused and per modality from the head's split (``probe_*``). Beside it, each
    encoder probed alone: a linear head on z^m only (``probe_*_alone``). Features are computed once."""
    train, val, test = (_features(model, s) for s in (data.train, data.val, data.test))
    opts = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed}
    c = model.num_classes
    y = test[2]
    events = y != model.background if model.background is not None else torch.ones_like(y, dtype=torch.bool)
    joint = train_probe((torch.cat(train[:2], -1), train[2]), (torch.cat(val[:2], -1), val[2]), c, **opts)
    with torch.no_grad():
        fused, la, lv = split_probe_logits(joint, test[0], test[1])
    out = {
        "probe_accuracy": metrics.accuracy(fused.argmax(-1), y),
        "probe_audio_accuracy": metrics.accuracy(la.argmax(-1)[events], y[events]),
        "probe_visual_accuracy": metrics.accuracy(lv.argmax(-1)[events], y[events]),
    }
    for i, name in enumerate(("audio", "visual")):
        alone = train_probe((train[i], train[2]), (val[i], val[2]), c, **opts)
        with torch.no_grad():
            pred = alone(test[i]).argmax(-1)
        out[f"probe_{name}_alone_accuracy"] = metrics.accuracy(pred[events], y[events])
    return out


# -------------------------------------------------------------------------------------------- all


def performance(model: AVModel, split: SplitData) -> dict[str, float]:
    """Accuracy and macro-F1 of the fused prediction (per segment on AVEL, background a class)."""
    pred = predict_split(model, split)
    yhat, y = pred["logits"].argmax(-1), split.labels
    return {"accuracy": metrics.accuracy(yhat, y), "macro_f1": metrics.macro_f1(yhat, y, model.num_classes)}


def imbalance_degree(acc_audio: float, acc_visual: float) -> float:
    """|acc_a − acc_v| of the linear probe: 0 when the two encoders are equally good."""
    return abs(acc_audio - acc_visual)


def balance_measures(
    model: AVModel,
    data: DataSplits,
    *,
    base_parameters: int | None = None,
    epoch_times: list[float] | None = None,
    peak_mib: float | None = None,
    seed: int = 0,
    both: bool = True,
) -> dict[str, Any]:
    """The three measures of ``model`` on ``data`` (test split): performance, imbalance (``both``
    modalities only), complexity."""
    out: dict[str, Any] = dict(performance(model, data.test))
    if both:
        out.update(linear_probe(model, data, seed=seed))
        out["imbalance_degree"] = imbalance_degree(out["probe_audio_accuracy"], out["probe_visual_accuracy"])
        out.update(shapley_values(model, data.test))
    params = sum(p.numel() for p in model.parameters())
    out["parameters"] = params
    if base_parameters is not None:
        out["extra_parameters"] = params - base_parameters
    if epoch_times:
        out["epoch_time_s"] = sum(epoch_times) / len(epoch_times)
    if peak_mib is not None:
        out["peak_memory_mib"] = peak_mib
    return out


MEASURE_NAMES = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "probe_accuracy": "linear probe, fused",
    "probe_audio_accuracy": "linear probe, audio",
    "probe_visual_accuracy": "linear probe, visual",
    "probe_audio_alone_accuracy": "linear probe of audio alone",
    "probe_visual_alone_accuracy": "linear probe of visual alone",
    "imbalance_degree": "imbalance degree |probe a − probe v|",
    "shapley_audio": "Shapley value, audio",
    "shapley_visual": "Shapley value, visual",
    "epoch_time_s": "training time per epoch (s)",
    "peak_memory_mib": "peak memory (MiB)",
    "parameters": "parameters",
    "extra_parameters": "parameters the method adds",
}


def format_measures(measures: dict[str, Any], names: tuple[str, str] = ("audio", "visual")) -> str:
    """BalanceBenchmark's measures as lines of a terminal table (accuracies in %)."""
    lines = ["BalanceBenchmark measures"]
    for key, label in MEASURE_NAMES.items():
        if key not in measures:
            continue
        label = label.replace("audio", names[0]).replace("visual", names[1])
        v = measures[key]
        if key in ("parameters", "extra_parameters"):
            lines.append(f"  {label:<38} {int(v):>10,d}")
        elif key in ("epoch_time_s", "peak_memory_mib"):
            lines.append(f"  {label:<38} {v:10.2f}")
        else:
            lines.append(f"  {label:<38} {100 * v:9.2f}%")
    return "\n".join(lines)


__all__ = [
    "balance_measures",
    "format_measures",
    "imbalance_degree",
    "linear_probe",
    "peak_memory_mib",
    "reset_peak_memory",
    "shapley_values",
]
