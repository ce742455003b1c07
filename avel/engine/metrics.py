"""Metrics of the AVE protocol and beyond, on tensors of predictions and labels (no model here).

Segment-level accuracy (Tian et al. 2018): correct segments / all segments of the split, argmax over 29
labels.
"""

from __future__ import annotations

import torch
from torch import Tensor


def accuracy(pred: Tensor, labels: Tensor) -> float:
    """Fraction of equal entries: segment-level accuracy for (N, T), clip accuracy for (N,)."""
    if labels.numel() == 0:
        return float("nan")
    return (pred == labels).float().mean().item()


def per_class_accuracy(pred: Tensor, labels: Tensor, num_classes: int) -> list[float]:
    """Accuracy of the samples / segments whose true label is k, for each k (NaN where k never occurs)."""
    pred, labels = pred.reshape(-1), labels.reshape(-1)
    total = torch.bincount(labels, minlength=num_classes).float()
    hit = torch.bincount(labels[pred == labels], minlength=num_classes).float()
    acc = hit / total
    return [float("nan") if t == 0 else a for a, t in zip(acc.tolist(), total.tolist(), strict=True)]


def confusion_matrix(pred: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(C, C) counts, rows = true label, columns = predicted label."""
    idx = labels.reshape(-1) * num_classes + pred.reshape(-1)
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def background_event_accuracy(pred: Tensor, labels: Tensor, background: int) -> dict[str, float]:
    """Accuracy on background segments and on event segments separately."""
    bg = labels == background
    return {
        "background_accuracy": accuracy(pred[bg], labels[bg]),
        "event_accuracy": accuracy(pred[~bg], labels[~bg]),
    }


def event_detection_prf(pred: Tensor, labels: Tensor, background: int) -> dict[str, float]:
    """Per-video precision / recall / F1 of "this second is an event" (any class), averaged over videos.

    For each video, P = predicted event seconds, G = annotated event seconds: precision |P∩G|/|P|, recall
    |P∩G|/|G|, F1 their harmonic mean (a video with P = G = ∅ scores 1). Also the mean absolute error of
    the event onset and offset (seconds) over videos where both P and G are non-empty.
    """
    p, g = pred != background, labels != background  # (N, T)
    inter = (p & g).sum(1).float()
    np_, ng = p.sum(1).float(), g.sum(1).float()
    both_empty = (np_ == 0) & (ng == 0)
    precision = torch.where(np_ > 0, inter / np_.clamp_min(1), both_empty.float())
    recall = torch.where(ng > 0, inter / ng.clamp_min(1), both_empty.float())
    denom = (precision + recall).clamp_min(1e-12)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / denom, 0.0)
    t = torch.arange(pred.shape[1], device=pred.device)
    big = pred.shape[1]
    on_p = torch.where(p, t, big).min(1).values
    on_g = torch.where(g, t, big).min(1).values
    off_p = torch.where(p, t + 1, 0).max(1).values
    off_g = torch.where(g, t + 1, 0).max(1).values
    valid = (np_ > 0) & (ng > 0)
    onset = (on_p - on_g).abs()[valid].float().mean().item() if valid.any() else float("nan")
    offset = (off_p - off_g).abs()[valid].float().mean().item() if valid.any() else float("nan")
    return {
        "event_precision": precision.mean().item(),
        "event_recall": recall.mean().item(),
        "event_f1": f1.mean().item(),
        "onset_error_s": onset,
        "offset_error_s": offset,
    }


def always_background_accuracy(labels: Tensor, background: int) -> float:
    """The trivial baseline of AVE: predict background everywhere (17.8% on the AVE test split)."""
    return (labels == background).float().mean().item()


def f1_per_class(pred: Tensor, labels: Tensor, num_classes: int) -> list[float]:
    """F1 of each class k (one-vs-rest): 2·TP / (2·TP + FP + FN); NaN where k is neither true nor guessed."""
    pred, labels = pred.reshape(-1), labels.reshape(-1)
    tp = torch.bincount(labels[pred == labels], minlength=num_classes).float()
    n_pred = torch.bincount(pred, minlength=num_classes).float()
    n_true = torch.bincount(labels, minlength=num_classes).float()
    denom = n_pred + n_true  # = 2·TP + FP + FN
    f1 = 2 * tp / denom.clamp_min(1)
    return [float("nan") if d == 0 else v for v, d in zip(f1.tolist(), denom.tolist(), strict=True)]


def macro_f1(pred: Tensor, labels: Tensor, num_classes: int) -> float:
    """Unweighted mean of the per-class F1 over the classes present in labels or predictions."""
    vals = [v for v in f1_per_class(pred, labels, num_classes) if v == v]
    return sum(vals) / len(vals) if vals else float("nan")


def average_precision(scores: Tensor, positive: Tensor) -> float:
    """AP of one class: mean over its positives of the precision at their rank (scores sorted descending,
    ties in index order; NaN without positives). Equals scikit-learn's ``average_precision_score`` when
    scores have no ties."""
    if not positive.any():
        return float("nan")
    order = torch.argsort(scores, descending=True, stable=True)
    hits = positive[order].float()
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, device=hits.device)
    return (precision * hits).sum().item() / hits.sum().item()


def mean_average_precision(scores: Tensor, labels: Tensor) -> float:
    """mAP over classes (OGM-GE reports it on Kinetics-Sounds / VGGSound): (N, C) scores, (N,) labels;
    the mean of ``average_precision`` over the classes that occur in labels."""
    aps = [average_precision(scores[:, k], labels == k) for k in range(scores.shape[1])]
    aps = [a for a in aps if a == a]
    return sum(aps) / len(aps) if aps else float("nan")
