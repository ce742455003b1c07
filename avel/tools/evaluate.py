"""``avel evaluate``: the full report of a checkpoint on one split (``avel.engine.evaluate.report``, each
modality's accuracy, BalanceBenchmark's measures) written as eval.json and confusion.png beside a table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from avel.data.splits import DataSplits
from avel.engine.checkpoint import check_checkpoint_data, model_from_checkpoint, model_from_kwargs
from avel.engine.config import bf16_supported, resolve_device
from avel.engine.evaluate import check_data_params, format_report, report, save_confusion_png
from avel.engine.measures import balance_measures, format_measures
from avel.families import load_splits
from avel.models.base import AVModel
from avel.rules import check, one_of


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_path: str | Path,
    *,
    split: str = "test",
    out_dir: str | Path | None = None,
    device: str = "auto",
) -> str:
    """``avel evaluate``: full report of a checkpoint on one split: eval.json, confusion.png, a table."""
    check("split", split, one_of("train", "val", "test"))
    dev = resolve_device(device)
    model, ckpt = model_from_checkpoint(checkpoint, dev)
    check_checkpoint_data(ckpt, checkpoint, data_path)
    cfg = ckpt["config"]
    data = load_splits(
        data_path,
        family=cfg["model"],
        device=dev,
        frames=cfg.get("frames", 4),
        eval_frames=cfg.get("eval_frames", 0),
        audio_norm=cfg.get("audio_norm", "clip"),
    )
    check_data_params(ckpt, data.meta, str(data_path))
    classes = data.meta["classes"]
    has_both = cfg.get("modality", "both") == "both"
    amp = bool(cfg.get("amp", False)) and bf16_supported(dev)  # as the run evaluated (its results.json)
    rep = report(model, getattr(data, split), classes, train=data.train if has_both else None, amp=amp)
    rep["measures"] = checkpoint_measures(model, ckpt, checkpoint, data, split, has_both)
    out = Path(out_dir) if out_dir else Path(checkpoint).parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(
        json.dumps({"checkpoint": str(checkpoint), "split": split, **rep}, indent=2)
    )
    save_confusion_png(rep["confusion"], classes, str(out / "confusion.png"))
    title = f"{Path(checkpoint)} on {split} ({rep['rows']} rows" + (
        ", bf16 autocast as its run)" if amp else ")"
    )
    names = list(data.meta.get("modalities", ("audio", "visual")))
    pair = (names[0], names[1])
    text = format_report(rep, title, pair) + "\n\n" + format_measures(rep["measures"], pair)
    return text + f"\n\nwrote {out / 'eval.json'} and {out / 'confusion.png'}"


def checkpoint_measures(
    model: AVModel, ckpt: dict[str, Any], checkpoint: str | Path, data: Any, split: str, both: bool
) -> dict[str, Any]:
    """BalanceBenchmark's measures of a checkpoint on ``split`` (the probe trains on train, selects on
    val); its run's complexity from the run directory (metrics.jsonl epoch times, results.json's peak
    memory) and the parameters its balancer adds to the base model."""
    run_dir = Path(checkpoint).parent
    metrics_path, results_path = run_dir / "metrics.jsonl", run_dir / "results.json"
    times = []
    if metrics_path.is_file():
        rows = [json.loads(ln) for ln in metrics_path.read_text().splitlines() if ln.strip()]
        times = [r["train_time_s"] for r in rows if "train_time_s" in r]
    peak = None
    if results_path.is_file():
        peak = json.loads(results_path.read_text()).get("measures", {}).get("peak_memory_mib")
    base = model_from_kwargs({**ckpt["model_kwargs"], "balancer": "none"})
    splits = DataSplits(data.train, data.val, getattr(data, split), data.meta)
    seed = int(ckpt["config"].get("seed", 0))
    return balance_measures(
        model,
        splits,
        base_parameters=sum(p.numel() for p in base.parameters()),
        epoch_times=times,
        peak_mib=peak,
        seed=seed,
        both=both,
    )
