"""Dataset layouts behind one interface: AVE lists its clips with their event times, every layout is found
from its path, and a layout added to the registries is preprocessed, described and synthesised by the
unchanged entry points."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from avel.cli import app
from avel.preprocessing import layouts
from avel.preprocessing.annotations import load_ave
from avel.preprocessing.clips import Clip, ClipList
from avel.preprocessing.h5 import describe
from avel.synth import layouts as synth_layouts


def test_ave_lists_ids_paths_labels_splits_and_event_times(tiny_ave):
    clip_list = layouts.LAYOUTS["ave"].list_clips(tiny_ave, layouts.PreprocessOptions())
    ann = load_ave(tiny_ave)
    assert clip_list.layout == "ave" and clip_list.classes == ann.classes
    assert [c.clip_id for c in clip_list.clips] == [r.video_id for r in ann.rows]
    assert all(
        c.video == tiny_ave / "AVE" / f"{c.clip_id}.mp4" and c.video.is_file() for c in clip_list.clips
    )
    assert [c.label for c in clip_list.clips] == [r.category for r in ann.rows]
    assert [c.events for c in clip_list.clips] == [((float(r.start), float(r.end)),) for r in ann.rows]
    for name, rows in clip_list.splits().items():
        assert sorted(rows.tolist()) == sorted(ann.splits[name].tolist()), name


def test_find_layout_by_path(tiny_ave, tmp_path):
    assert layouts.find_layout(tiny_ave).name == "ave"
    cremad = tmp_path / "cremad"
    for sub in ("AudioWAV", "VideoFlash"):
        (cremad / sub).mkdir(parents=True)
    assert layouts.find_layout(cremad).name == "crema-d"
    assert layouts.find_layout(tmp_path / "clips.csv").name == "manifest"
    (tmp_path / "other").mkdir()
    with pytest.raises(
        ValueError, match=r"other: not a dataset in any known layout \(ave: a folder with AVE/"
    ):
        layouts.find_layout(tmp_path / "other")
    with pytest.raises(FileNotFoundError, match="missing: no such file or folder"):
        layouts.find_layout(tmp_path / "missing")


def _list_file(path: Path, options: layouts.PreprocessOptions) -> ClipList:
    """A made-up layout: ``.list`` lines ``video<TAB>label<TAB>split``."""
    clips = []
    for line, text in enumerate(path.read_text().splitlines(), 1):
        video, label, split = text.split("\t")
        clips.append(Clip(Path(video).stem, Path(video), label, split, line=line))
    return ClipList(clips, sorted({c.label for c in clips}), "list", path)


def test_a_new_layout_is_one_registry_entry(tiny_ave, tmp_path, monkeypatch):
    new = layouts.Layout("list", "a .list file", lambda p: p.suffix == ".list", _list_file, per_second=False)
    monkeypatch.setitem(layouts.LAYOUTS, "list", new)
    ann = load_ave(tiny_ave)
    picked = [
        ann.rows[i] for i in (*ann.splits["train"][:3], *ann.splits["val"][:2], *ann.splits["test"][:2])
    ]
    split_of = {ann.rows[i].video_id: s for s, rows in ann.splits.items() for i in rows}
    listing = tmp_path / "set.list"
    listing.write_text(
        "".join(
            f"{tiny_ave / 'AVE' / r.video_id}.mp4\t{r.category}\t{split_of[r.video_id]}\n" for r in picked
        )
    )
    out = tmp_path / "set.h5"
    opts = layouts.PreprocessOptions(frame_size=32, frames=2, audio_seconds=1.0, progress=False)
    report = layouts.preprocess_dataset(listing, out, opts)
    assert not report.failed
    text = describe(out)
    assert "avel-clips" in text and "rows: 7" in text

    def synth_list(out_dir: Path, **options) -> dict:
        out_dir.mkdir(parents=True)
        (out_dir / "set.list").write_text("")
        return {"layout": "list", "videos": options["videos"]}

    monkeypatch.setitem(synth_layouts.SYNTHESISERS, "list", synth_list)
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "s"), "--layout", "list", "--videos", "3"])
    assert result.exit_code == 0, result.output
    assert '"videos": 3' in result.output and (tmp_path / "s" / "set.list").is_file()
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "t"), "--layout", "nope"])
    assert result.exit_code == 2
    allowed = "must be one of ave, crema-d, manifest, list"
    assert result.output.strip() == f'error: layout: "nope" is not allowed: {allowed}'
