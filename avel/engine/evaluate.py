"""Evaluate a model on a split: the AVE segment accuracy, and each modality on its own.

``evaluate`` is what the training loop calls every epoch (cheap, on the device); ``report`` is the full
picture behind ``avel evaluate`` (``avel.tools.evaluate``) (per-class, background vs event, event-detection
P/R/F1, confusion matrix). Each modality's accuracy is measured with the prototype classifier of PMR (Eq. 7)
on its representation (h^a_t / h^v_t on AVEL, the pooled encoder output on the classifiers), prototypes from
the train split; on AVEL only event segments are scored, over the event classes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from avel.data.splits import SplitData
from avel.engine import metrics
from avel.models.base import AVModel
from avel.models.prototypes import compute_prototypes, prototype_logits


@torch.no_grad()
def predict_split(
    model: AVModel, split: SplitData, batch_size: int = 256, amp: bool = False
) -> dict[str, Tensor]:
    """Logits and representations of every row of ``split``, in row order, on the split's device."""
    was_training = model.training
    model.eval()
    outs: dict[str, list[Tensor]] = {"logits": [], "z_audio": [], "z_visual": []}
    for batch in split.batches(batch_size):
        with torch.autocast(split.device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(batch.audio, batch.visual)
        outs["logits"].append(out.logits.float())
        outs["z_audio"].append(out.z_audio.float())
        outs["z_visual"].append(out.z_visual.float())
    model.train(was_training)
    return {k: torch.cat(v) for k, v in outs.items()}


def modality_logits(pred: dict[str, Tensor], prototypes: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Each modality's prototype-classifier logits (Eq. 7), shaped like the labels plus the K prototypes."""
    shape = pred["logits"].shape[:-1]
    za, zv = (pred[k].reshape(-1, pred[k].shape[-1]) for k in ("z_audio", "z_visual"))
    la, lv = prototype_logits(za, prototypes[0]), prototype_logits(zv, prototypes[1])  # (N, K), Eq. 7
    return la.reshape(*shape, -1), lv.reshape(*shape, -1)


def modality_predictions(pred: dict[str, Tensor], prototypes: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Each modality's prototype-classifier prediction (Eq. 7: nearest prototype), shaped like the labels."""
    la, lv = modality_logits(pred, prototypes)
    return la.argmax(-1), lv.argmax(-1)


def split_rho(
    pred: dict[str, Tensor], prototypes: tuple[Tensor, Tensor], labels: Tensor, mask: Tensor
) -> float:
    """ρ over a split, as PMR measures it on a batch: Σ_i p^a_i[y_i] / Σ_i p^v_i[y_i] (Eq. 8), p the softmax
    of each modality's prototype logits (Eq. 7) over the rows in ``mask``; a measurement for every run."""
    la, lv = modality_logits(pred, prototypes)
    y = labels[mask][:, None]
    s_a = la[mask].softmax(-1).gather(1, y).sum()
    s_v = lv[mask].softmax(-1).gather(1, y).sum()
    return float(s_a / s_v.clamp_min(1e-8))  # Eq. 8


def train_prototypes(model: AVModel, train: SplitData, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    c_a, c_v, _ = compute_prototypes(
        model, train, model.prototype_classes, model.background, indices=None, batch_size=batch_size
    )
    return c_a, c_v


def clip_metrics(logits: Tensor, labels: Tensor) -> dict[str, float]:
    """Clip-level macro-F1 and mAP (on softmax scores) of a classifier, as OGM-GE / BML report them."""
    num = logits.shape[-1]
    return {
        "macro_f1": metrics.macro_f1(logits.argmax(-1), labels, num),
        "map": metrics.mean_average_precision(logits.softmax(-1), labels),
    }


def evaluate(
    model: AVModel,
    split: SplitData,
    *,
    prototypes: tuple[Tensor, Tensor] | None = None,
    batch_size: int = 256,
    amp: bool = False,
) -> dict[str, float]:
    """Accuracy (segment-level on AVEL) and, given train prototypes, each modality's prototype accuracy."""
    pred = predict_split(model, split, batch_size, amp)
    labels = split.labels
    out = {"accuracy": metrics.accuracy(pred["logits"].argmax(-1), labels)}
    if model.background is None:
        out.update(clip_metrics(pred["logits"], labels))
    if prototypes is not None:
        mask = (
            labels != model.background
            if model.background is not None
            else torch.ones_like(labels, dtype=torch.bool)
        )
        pa, pv = modality_predictions(pred, prototypes)
        out["audio_accuracy"] = metrics.accuracy(pa[mask], labels[mask])
        out["visual_accuracy"] = metrics.accuracy(pv[mask], labels[mask])
        out["rho"] = split_rho(pred, prototypes, labels, mask)
    return out


def report(
    model: AVModel,
    split: SplitData,
    classes: list[str],
    *,
    train: SplitData | None = None,
    batch_size: int = 256,
    amp: bool = False,
) -> dict[str, Any]:
    """All that ``avel evaluate`` shows: accuracy, per class, background/event, detection P/R/F1; ``amp``:
    the forward under bf16 autocast, as a run trained with it evaluates (its results.json)."""
    pred = predict_split(model, split, batch_size, amp)
    y = split.labels
    yhat = pred["logits"].argmax(-1)
    num = pred["logits"].shape[-1]
    out: dict[str, Any] = {
        "rows": len(split),
        "accuracy": metrics.accuracy(yhat, y),
        "per_class_accuracy": dict(zip(classes[:num], metrics.per_class_accuracy(yhat, y, num), strict=True)),
        "confusion": metrics.confusion_matrix(yhat, y, num).tolist(),
    }
    if model.background is None:
        out.update(clip_metrics(pred["logits"], y))
        f1 = metrics.f1_per_class(yhat, y, num)
        out["per_class_f1"] = dict(zip(classes[:num], f1, strict=True))
    if model.background is not None:
        out["always_background"] = metrics.always_background_accuracy(y, model.background)
        out.update(metrics.background_event_accuracy(yhat, y, model.background))
        out.update(metrics.event_detection_prf(yhat, y, model.background))
    if train is not None:
        prototypes = train_prototypes(model, train, batch_size)
        mask = y != model.background if model.background is not None else torch.ones_like(y, dtype=torch.bool)
        pa, pv = modality_predictions(pred, prototypes)
        out["audio_accuracy"] = metrics.accuracy(pa[mask], y[mask])
        out["visual_accuracy"] = metrics.accuracy(pv[mask], y[mask])
        if model.background is None:
            out["audio_macro_f1"] = metrics.macro_f1(pa, y, num)
            out["visual_macro_f1"] = metrics.macro_f1(pv, y, num)
    return out


def format_report(rep: dict[str, Any], title: str, names: tuple[str, str] = ("audio", "visual")) -> str:
    """A readable terminal table of a report; ``names``: the two modalities (gray / colored on CG-MNIST)."""
    lines = [title, "-" * len(title)]
    a, v = names
    order = [
        ("accuracy", "segment accuracy" if "always_background" in rep else "accuracy"),
        ("macro_f1", "macro-F1"),
        ("map", "mAP"),
        ("always_background", "always-background baseline"),
        ("background_accuracy", "background segments"),
        ("event_accuracy", "event segments"),
        ("event_precision", "event detection precision"),
        ("event_recall", "event detection recall"),
        ("event_f1", "event detection F1"),
        ("onset_error_s", "onset error (s)"),
        ("offset_error_s", "offset error (s)"),
        ("audio_accuracy", f"{a} alone (prototypes)"),
        ("visual_accuracy", f"{v} alone (prototypes)"),
        ("audio_macro_f1", f"{a} alone macro-F1"),
        ("visual_macro_f1", f"{v} alone macro-F1"),
    ]
    for key, name in order:
        if key in rep:
            v = rep[key]
            lines.append(f"{name:<32} {v:8.2f}" if key.endswith("_s") else f"{name:<32} {100 * v:7.2f}%")
    lines.append("")
    f1 = rep.get("per_class_f1", {})
    lines.append(f"{'class':<34} accuracy" + ("       F1" if f1 else ""))
    for name, acc in rep["per_class_accuracy"].items():
        row = f"{name:<34} {_pct(acc)}"
        lines.append(row + (f"  {_pct(f1[name])}" if name in f1 else ""))
    return "\n".join(lines)


def _pct(v: float) -> str:
    return "   n/a" if v != v else f"{100 * v:6.1f}%"


def save_confusion_png(confusion: list[list[int]], classes: list[str], path: str) -> None:
    """Row-normalised confusion matrix as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = torch.tensor(confusion, dtype=torch.float32)
    cm = cm / cm.sum(1, keepdim=True).clamp_min(1)
    n = cm.shape[0]
    fig, ax = plt.subplots(figsize=(0.32 * n + 3, 0.32 * n + 2.5))
    im = ax.imshow(cm.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), [c[:18] for c in classes[:n]], rotation=90, fontsize=7)
    ax.set_yticks(range(n), [c[:18] for c in classes[:n]], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def check_data_params(ckpt: dict[str, Any], meta: dict[str, Any], path: str) -> None:
    """Refuse a data file whose preprocessing differs from the one the model was trained on."""
    for key, need in ckpt.get("data_params", {}).items():
        have = meta.get(key)
        if have is not None and have != need:
            raise ValueError(f"{path}: {key} = {have!r}, but the model was trained on {key} = {need!r}")
    trained, now = ckpt["data_meta"].get("classes"), meta.get("classes")
    if trained and now and list(trained) != list(now):
        raise ValueError(f"{path}: its class list differs from the one the model was trained on")
