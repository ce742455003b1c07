"""The CREMA-D release layout (Cao et al., 2014) with the PMR / OGM-GE split lists.

```
CREMA-D/
  AudioWAV/<id>.wav        16 kHz mono speech of clip <id> (actor_sentence_emotion_level, 1001_DFA_ANG_XX)
  VideoFlash/<id>.flv      the face video of the same clip
  train.csv  test.csv      clip_id,EMOTION per line, no header (read as utf-8-sig, as the released code)
```
Classes in the released code's order: NEU, HAP, SAD, FEA, DIS, ANG (indices 0..5). Validation is carved
from train per class with a fixed seed (``avel.preprocessing.clips.carve_val``); test is never touched. A list
line whose files are missing is kept and reported as a failed clip by ``avel preprocess`` (the released code
drops it silently).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from avel.preprocessing.clips import Clip, ClipList, with_val

CREMAD_CLASSES = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
LIST_FILES = {"train": "train.csv", "test": "test.csv"}
CLIP_ID = re.compile(r"^\d{4}_[A-Z]{3}_[A-Z]{3}_[A-Z]{2}$")


def is_cremad(dataset_dir: str | Path) -> bool:
    """A folder in the CREMA-D release layout (AudioWAV/ and VideoFlash/ next to train.csv)."""
    d = Path(dataset_dir)
    return (d / "AudioWAV").is_dir() and (d / "VideoFlash").is_dir()


def read_list(path: str | Path) -> list[tuple[int, str, str]]:
    """(line, clip_id, emotion) of a ``clip_id,EMOTION`` list; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (a CREMA-D split list, clip_id,EMOTION per line)")
    out = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            row = [x.strip() for x in row]
            if not any(row):
                continue
            if len(row) != 2:
                raise ValueError(f"{path}:{line}: expected 2 fields 'clip_id,EMOTION', got {len(row)}: {row}")
            clip_id, emotion = row
            if emotion not in CREMAD_CLASSES:
                raise ValueError(f"{path}:{line}: unknown emotion {emotion!r}; valid: {list(CREMAD_CLASSES)}")
            if not CLIP_ID.match(clip_id):
                raise ValueError(
                    f"{path}:{line}: clip id {clip_id!r} is not actor_sentence_emotion_level "
                    "(e.g. 1001_DFA_ANG_XX)"
                )
            out.append((line, clip_id, emotion))
    return out


def load_cremad(
    dataset_dir: str | Path,
    lists_dir: str | Path | None = None,
    val_fraction: float = 0.1,
    val_seed: int = 0,
) -> ClipList:
    """The clips of a CREMA-D folder named by ``train.csv`` / ``test.csv`` (in ``lists_dir``, default the
    folder itself), with val carved from train."""
    d = Path(dataset_dir)
    lists = Path(lists_dir) if lists_dir else d
    clips: list[Clip] = []
    seen: dict[str, str] = {}
    for split, name in LIST_FILES.items():
        path = lists / name
        for line, clip_id, emotion in read_list(path):
            if clip_id in seen:
                raise ValueError(f"{path}:{line}: clip {clip_id} is already listed ({seen[clip_id]})")
            seen[clip_id] = f"{path}:{line}"
            video, audio = d / "VideoFlash" / f"{clip_id}.flv", d / "AudioWAV" / f"{clip_id}.wav"
            clips.append(Clip(clip_id, video, emotion, split, audio, line=line))
    clips = with_val(clips, val_fraction, val_seed)
    info = {
        "split_lists": [str((lists / n).resolve()) for n in LIST_FILES.values()],
        "val_fraction": val_fraction,
        "val_seed": val_seed,
    }
    return ClipList(clips, list(CREMAD_CLASSES), "crema-d", d, info)
