"""Dataset layouts: how a dataset on disk names its clips, and the one entry point that preprocesses any.

A layout is a way a dataset sits on disk (AVE's release folder, CREMA-D's, a clip-manifest CSV). Each has
one reading module in ``avel/preprocessing/`` and one synthesising module in ``avel/synth/``
(``avel.synth.layouts``), and one ``Layout`` record here:

- ``detect(path)``: is ``path`` a dataset in this layout;
- ``list_clips(path, options)``: its clips as a ``avel.preprocessing.clips.ClipList``: each clip's id, media
  paths (video, optional separate audio), label, split, and event times where the layout has them;
- ``per_second``: True when the labels are per second inside the clip (AVE: the ``avel-preprocess``
  schema, ten one-second segments), False for one label per clip (the ``avel-clips`` schema);
- ``clip_preset``: the ``clip_pipeline.DATASETS`` defaults a clip layout starts from (frames, seconds).

Adding a layout: write its reader (a ``detect`` and a ``list_clips`` function) and its synthesiser, and add
one line to ``LAYOUTS`` here and to ``avel.synth.layouts.SYNTHESISERS``; ``avel preprocess``,
``avel info`` and ``avel synth`` find it there and do not change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from avel.preprocessing.ave import ave_clips, is_ave
from avel.preprocessing.clips import ClipList
from avel.preprocessing.cremad import is_cremad, load_cremad
from avel.preprocessing.decoders import DECORD, Decoder
from avel.preprocessing.manifest import load_manifest
from avel.preprocessing.runs import PreprocessReport


@dataclass(frozen=True)
class PreprocessOptions:
    """Everything ``avel preprocess`` takes besides the dataset and the output file."""

    workers: int = 1  # decoding processes
    threads: int | None = None  # decoding threads of this process instead (None: runs.DEFAULT_THREADS)
    progress: bool = True
    frame_size: int = 224
    frames_per_segment: int = 1  # per-second layouts: frames per one-second segment
    audio_pad: str = "zero"  # per-second layouts: a clip shorter than its segments is zero-padded or tiled
    dataset: str | None = None  # clip layouts: the DATASETS preset (default: the layout's own)
    frames: int | None = None  # clip layouts: frames stored per clip
    audio_seconds: float | None = None  # clip layouts: spectrogram window
    lists: Path | None = None  # CREMA-D: the folder of its split lists (default: the dataset folder)
    val_fraction: float = 0.1  # layouts without a val split: share of each train class carved into val
    val_seed: int = 0
    classes: list[str] | None = None  # class order (default: the layout's own)
    wait: bool = False  # another run writing the same output: wait for it (default: refuse at once)
    shard: tuple[int, int] | None = None  # (I, N): decode shard I of N only (avel.preprocessing.runs)
    merge: bool = False  # write the file from the shards of every --shard I/N run
    spectrogram: str = "avel"  # the transform (avel.preprocessing.audio.SPECTROGRAMS): avel | pmr | pmr16
    decoder: Decoder = DECORD  # decord | torchcodec (avel.preprocessing.decoders)


@dataclass(frozen=True)
class Layout:
    name: str
    files: str  # what a dataset in this layout looks like on disk (help texts and errors)
    detect: Callable[[Path], bool]
    list_clips: Callable[[Path, PreprocessOptions], ClipList]
    per_second: bool
    clip_preset: str | None = None


def _is_manifest(path: Path) -> bool:
    return path.suffix.lower() == ".csv"


LAYOUTS: dict[str, Layout] = {
    "ave": Layout(
        "ave",
        "a folder with AVE/<id>.mp4, Annotations.txt, trainSet.txt / valSet.txt / testSet.txt",
        is_ave,
        lambda path, o: ave_clips(path, o.classes),
        per_second=True,
    ),
    "crema-d": Layout(
        "crema-d",
        "a folder with AudioWAV/, VideoFlash/, train.csv, test.csv",
        is_cremad,
        lambda path, o: load_cremad(path, o.lists, o.val_fraction, o.val_seed),
        per_second=False,
        clip_preset="crema-d",
    ),
    "manifest": Layout(
        "manifest",
        "a CSV file with the columns video,label,split[,start,end,audio,id]",
        _is_manifest,
        lambda path, o: load_manifest(path, o.classes, o.val_fraction, o.val_seed),
        per_second=False,
    ),
}


def find_layout(path: str | Path) -> Layout:
    """The layout of the dataset at ``path``; a clear error naming every layout when none fits."""
    path = Path(path)
    for layout in LAYOUTS.values():
        if layout.detect(path):
            return layout
    known = "; ".join(f"{lay.name}: {lay.files}" for lay in LAYOUTS.values())
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder (a dataset in one of the layouts {known})")
    raise ValueError(f"{path}: not a dataset in any known layout ({known})")


def preprocess_dataset(
    path: str | Path, out_h5: str | Path, options: PreprocessOptions = PreprocessOptions()
) -> PreprocessReport:
    """Decode the dataset at ``path`` (any layout of ``LAYOUTS``) into one avel HDF5 file ``out_h5``."""
    from avel.preprocessing.clip_pipeline import clip_params, preprocess_clips
    from avel.preprocessing.pipeline import preprocess

    layout = find_layout(path)
    o = options
    if layout.per_second:
        return preprocess(
            path,
            out_h5,
            workers=o.workers,
            threads=o.threads,
            frame_size=o.frame_size,
            frames_per_segment=o.frames_per_segment,
            audio_pad=o.audio_pad,
            progress=o.progress,
            classes=o.classes,
            shard=o.shard,
            merge=o.merge,
            wait=o.wait,
            spectrogram=o.spectrogram,
            decoder=o.decoder,
        )
    clip_list = layout.list_clips(Path(path), o)
    params = clip_params(
        o.dataset or layout.clip_preset,
        frames=o.frames,
        frame_size=o.frame_size,
        audio_seconds=o.audio_seconds,
        spectrogram=o.spectrogram,
    )
    return preprocess_clips(
        clip_list,
        out_h5,
        params,
        workers=o.workers,
        threads=o.threads,
        progress=o.progress,
        wait=o.wait,
        shard=o.shard,
        merge=o.merge,
        decoder=o.decoder,
    )
