"""The AVE release layout (Tian et al., ECCV 2018) as a dataset layout (``avel.preprocessing.layouts``).

```
AVE_DIR/
  AVE/<id>.mp4                          the videos (another container is taken when no mp4 exists)
  Annotations.txt                       Category&VideoID&Quality&StartTime&EndTime per line
  trainSet.txt  valSet.txt  testSet.txt the splits, lines of Annotations.txt
```
Parsing is ``avel.preprocessing.annotations``; this module lists the clips: one per annotation row, with its
event's ``[start, end)`` seconds.
"""

from __future__ import annotations

from pathlib import Path

from avel.preprocessing.annotations import load_ave
from avel.preprocessing.clips import Clip, ClipList


def ave_video_path(dataset_dir: str | Path, video_id: str) -> Path:
    """``AVE/<id>.mp4``, or the one file ``AVE/<id>.*`` of another container when there is no mp4."""
    p = Path(dataset_dir) / "AVE" / f"{video_id}.mp4"
    if not p.exists():
        others = sorted((Path(dataset_dir) / "AVE").glob(f"{video_id}.*"))
        if others:
            return others[0]
    return p


def is_ave(path: str | Path) -> bool:
    """A folder in the AVE layout (Annotations.txt, or the AVE/ video folder)."""
    d = Path(path)
    return d.is_dir() and ((d / "Annotations.txt").is_file() or (d / "AVE").is_dir())


def ave_clips(dataset_dir: str | Path, classes: list[str] | None = None) -> ClipList:
    """The AVE layout as a clip listing: one clip per annotation row, its event ``[start, end)`` seconds;
    a row in no split file has split ``""``."""
    ann = load_ave(dataset_dir, classes=classes)
    split_of = {int(i): name for name, rows in ann.splits.items() for i in rows}
    clips = [
        Clip(
            r.video_id,
            ave_video_path(dataset_dir, r.video_id),
            r.category,
            split_of.get(i, ""),
            line=r.line,
            events=((float(r.start), float(r.end)),),
        )
        for i, r in enumerate(ann.rows)
    ]
    return ClipList(clips, ann.classes, "ave", Path(dataset_dir), {"annotations": str(ann.source)})
