"""A clip manifest: any clip dataset (Kinetics-Sounds, VGGSound, UCF-style sets, a user's own clips).

One CSV with a header naming its columns (any order; an optional UTF-8 BOM):

| column | required | meaning |
|---|---|---|
| `video` | yes | path of the video file, relative to the CSV's folder (or absolute) |
| `label` | yes | class name |
| `split` | yes | train, val or test |
| `start`, `end` | no | seconds of the clip inside the file (empty = from the start / to the end) |
| `audio` | no | a separate audio file (empty = the video's own audio stream) |
| `id` | no | clip id (default: the video file name without extension, then `#n` for repeats) |

Class order: order of first appearance in the manifest (as the AVE standard), unless ``classes`` is given.
Without any ``val`` row, val is carved from train per class with a fixed seed (recorded in the file).
"""

from __future__ import annotations

import csv
from pathlib import Path

from avel.preprocessing.clips import Clip, ClipList, with_val
from avel.preprocessing.h5 import SPLIT_NAMES

REQUIRED = ("video", "label", "split")
OPTIONAL = ("start", "end", "audio", "id")


def _seconds(value: str, what: str, where: str) -> float | None:
    if value == "":
        return None
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"{where}: {what} must be seconds, got {value!r}") from None
    if not x >= 0:
        raise ValueError(f"{where}: {what} must be >= 0, got {value!r}")
    return x


def _path(value: str, base: Path) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p


def load_manifest(
    manifest: str | Path,
    classes: list[str] | None = None,
    val_fraction: float = 0.1,
    val_seed: int = 0,
) -> ClipList:
    """The clips of a manifest CSV; errors name the file and line."""
    path = Path(manifest)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (a clip manifest CSV: video,label,split,...)")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise ValueError(f"{path}:1: empty manifest; the first line names the columns {list(REQUIRED)}")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    if missing or unknown:
        raise ValueError(
            f"{path}:1: header {rows[0]}: missing columns {missing}, unknown columns {unknown}; "
            f"columns: {list(REQUIRED)} and optionally {list(OPTIONAL)}"
        )
    col = {name: i for i, name in enumerate(header)}
    clips: list[Clip] = []
    ids: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(x.strip() for x in row):
            continue
        where = f"{path}:{line}"
        if len(row) != len(header):
            raise ValueError(f"{where}: {len(row)} fields, but the header names {len(header)}")
        v = {name: row[i].strip() for name, i in col.items()}
        if not v["video"] or not v["label"]:
            raise ValueError(f"{where}: empty video or label")
        if v["split"] not in SPLIT_NAMES:
            raise ValueError(f"{where}: split {v['split']!r}; valid: {list(SPLIT_NAMES)}")
        start = _seconds(v.get("start", ""), "start", where)
        end = _seconds(v.get("end", ""), "end", where)
        if start is not None and end is not None and not end > start:
            raise ValueError(f"{where}: end ({end}) must be after start ({start})")
        clip_id = v.get("id") or Path(v["video"]).stem
        if clip_id in ids:
            ids[clip_id] += 1
            clip_id = f"{clip_id}#{ids[clip_id]}"
        else:
            ids[clip_id] = 0
        audio = _path(v["audio"], path.parent) if v.get("audio") else None
        video = _path(v["video"], path.parent)
        clips.append(Clip(clip_id, video, v["label"], v["split"], audio, start, end, line))
    order = list(dict.fromkeys(c.label for c in clips))
    if classes is not None:
        extra = [c for c in order if c not in classes]
        if extra:
            raise ValueError(f"{path}: labels not in the given class list: {extra}")
        order = list(classes)
    info: dict = {"manifest": str(path)}
    if not any(c.split == "val" for c in clips):
        clips = with_val(clips, val_fraction, val_seed)
        info.update(val_fraction=val_fraction, val_seed=val_seed)
    return ClipList(clips, order, "manifest", path, info)
