"""Reading avel HDF5 files into device-resident splits, and batching them without host round trips."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import h5py.h5s as h5s
import numpy as np
import torch
from torch import Tensor

from avel.data.augment import frames_to_input, spec_augment
from avel.preprocessing.audio import num_columns, spec_from_params
from avel.preprocessing.h5 import (
    DATA_ARRAYS,
    PREPROCESS_KIND,
    SPLIT_NAMES,
    attr_value,
    damage_error,
    nonfinite_error,
    nonfinite_rows,
    open_avel,
)
from avel.rules import check, one_of

# clip classifier audio: "clip" standardises the whole stored clip, then tiles the event span (avel);
# "tiled" tiles the span, then standardises the tiled spectrogram (the released PMR code's order)
AUDIO_NORMS = ("clip", "tiled")


@dataclass
class Batch:
    """Model inputs for one mini-batch, already on the training device.

    Localizer (features): audio (B, T, Da), visual (B, T, H, W, C).
    Localizer (end-to-end): audio (B, T, 1, F, W) spectrogram per second, visual (B, T, K, 3, S, S) float.
    Classifier: audio (B, 1, F, 1004), visual (B, K, 3, S, S) float.
    labels: (B, T) segment labels (background = 28) or (B,) clip labels. index: (B,) rows of the split.
    """

    audio: Tensor
    visual: Tensor
    labels: Tensor
    index: Tensor


# transform(audio_rows, visual_rows, index, train, generator) -> (audio, visual) model inputs
Transform = Callable[[Tensor, Tensor, Tensor, bool, "torch.Generator | None"], tuple[Tensor, Tensor]]


class SplitData:
    """One split held as tensors on one device; ``batches`` gathers rows by index on that device.

    ``audio`` / ``visual`` hold the stored rows (features, or uint8 frames and spectrograms); an optional
    ``transform`` turns gathered rows into model inputs (segment cutting, GPU augmentation).
    ``sharded``: one rank's shard of a split trained on several processes (``avel.engine.distributed``).
    """

    sharded: bool = False
    sealed: str | None = None  # why the split may not be read now (the clean protocol's test: ``seal``)
    stored_frames: int = 0  # frames stored per clip (clip files), which ``batch(frames=k)`` picks from

    def __init__(
        self,
        audio: Tensor,
        visual: Tensor,
        labels: Tensor,
        transform: Transform | None = None,
        rows: Tensor | None = None,
    ) -> None:
        if not (len(audio) == len(visual) == len(labels)):
            raise ValueError(f"split tensors disagree in length: {len(audio)}, {len(visual)}, {len(labels)}")
        self.audio, self.visual, self.labels = audio, visual, labels
        self.transform = transform
        self.rows = rows if rows is not None else torch.arange(len(labels))  # rows in the HDF5 file

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def device(self) -> torch.device:
        return self.labels.device

    def seal(self, why: str | None) -> None:
        """Refuse every read of the split's rows (``batch``, ``batches``) while ``why`` is set (None opens
        it): the clean protocol seals test until training is over."""
        self.sealed = why

    def batch(
        self,
        idx: Tensor,
        train: bool = False,
        generator: torch.Generator | None = None,
        buffers: dict[str, Tensor] | None = None,
        frames: int = 0,
    ) -> Batch:
        """Rows ``idx`` as model inputs; with ``buffers`` the stored rows are gathered into tensors kept
        there and reused by the next call (overwritten by it). ``frames`` (clip files, evaluation inputs):
        that many evenly spaced stored frames per clip instead of the split's evaluation frames (0)."""
        if self.sealed:
            raise RuntimeError(f"this split is sealed: {self.sealed}")
        if frames and not 1 <= frames <= self.stored_frames:
            where = f"1..{self.stored_frames}" if self.stored_frames else "clip files (avel-clips) only"
            raise ValueError(f"frames = {frames} per clip: {where}")
        idx = idx.to(self.device)
        audio = _gather(self.audio, idx, buffers, "audio")
        visual = _gather(self.visual, idx, buffers, "visual")
        if frames:
            audio, visual = self.transform(audio, visual, idx, train, generator, frames)
        elif self.transform is not None:
            audio, visual = self.transform(audio, visual, idx, train, generator)
        return Batch(audio, visual, self.labels[idx], idx)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        indices: Tensor | None = None,
        train: bool = False,
        drop_last: bool = False,
        reuse: bool = False,
        frames: int = 0,
    ) -> Iterator[Batch]:
        """Mini-batches over ``indices`` (default: every row), shuffled with ``generator`` if asked.

        ``reuse``: every batch gathers its rows into the same tensors, so each batch's inputs are valid until
        the next is asked for (a training step that finishes its backward first). It saves a fresh
        allocation per batch, which on a CPU costs more than the copy itself (64 MB of AVE maps per batch).
        """
        order = indices if indices is not None else torch.arange(len(self))
        if shuffle:
            order = order[torch.randperm(len(order), generator=generator)]
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        buffers: dict[str, Tensor] | None = {} if reuse else None
        for start in range(0, stop, batch_size):
            yield self.batch(order[start : start + batch_size], train, generator, buffers, frames)


def _gather(stored: Tensor, idx: Tensor, buffers: dict[str, Tensor] | None, key: str) -> Tensor:
    """stored[idx] (rows), into ``buffers[key]`` when given (made or remade to the batch's shape)."""
    if buffers is None:
        return stored.index_select(0, idx)
    shape = (len(idx), *stored.shape[1:])
    if key not in buffers or buffers[key].shape != shape:
        buffers[key] = stored.new_empty(shape)
    return torch.index_select(stored, 0, idx, out=buffers[key])


@dataclass
class DataSplits:
    train: SplitData
    val: SplitData
    test: SplitData
    meta: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------- HDF5 -> splits


def file_kind(path: str | Path) -> str:
    """The ``kind`` of an avel HDF5 file after its checks (``avel.preprocessing.h5.check_file``): a clear
    error naming the file for anything else, an unfinished file, or one lacking what its kind needs."""
    with open_avel(path) as f:
        return str(attr_value(f.attrs["kind"]))


def read_meta(f: h5py.File) -> dict:
    """Attributes of the file as plain Python values (classes decoded from JSON)."""
    meta = {k: attr_value(v) for k, v in f.attrs.items()}
    for key in ("classes", "modalities"):
        if isinstance(meta.get(key), str):
            meta[key] = json.loads(meta[key])
    return meta


def _split_rows(f: h5py.File, name: str) -> np.ndarray:
    if f"splits/{name}" not in f:
        raise ValueError(
            f"{f.filename}: has no split {name!r} (datasets under splits/: {list(f.get('splits', {}))})"
        )
    return np.sort(f[f"splits/{name}"][()].astype(np.int64))


SMALL_BYTES = 64 * 2**20  # an unchunked dataset up to this size is read whole


def row_runs(rows: np.ndarray) -> list[tuple[int, int, int]]:
    """Increasing ``rows`` as runs of consecutive rows: (position in ``rows``, first row, run length)."""
    if len(rows) == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    lengths = np.diff(np.concatenate([starts, [len(rows)]]))
    return [(int(i), int(rows[i]), int(n)) for i, n in zip(starts, lengths, strict=True)]


def rows_of(ds: h5py.Dataset, rows: np.ndarray, dtype=None) -> np.ndarray:
    """Rows ``rows`` (increasing) of a dataset as one new array of ``dtype`` (default: the stored one).

    Each run of consecutive rows is one hyperslab read straight into its place in the output (HDF5 converts
    the type on the way): the time of reading those rows in order, memory of the output only. h5py's fancy
    indexing (``ds[rows]``) is many times slower on chunked datasets, and reading the whole dataset first
    holds every row in memory.
    """
    try:
        if ds.chunks is None and ds.nbytes <= SMALL_BYTES:  # row metadata: one read, then index
            return ds[()][rows].astype(dtype or ds.dtype, copy=False)
        out = np.empty((len(rows), *ds.shape[1:]), dtype or ds.dtype)
        tail = ds.shape[1:]
        file_space = ds.id.get_space()
        # h5py's low-level read: read_direct's Python-side selection checks cost more than a 1 MB row
        for at, first, n in row_runs(np.asarray(rows)) if out.size else []:
            file_space.select_hyperslab((first, *(0,) * len(tail)), (n, *tail))
            ds.id.read(h5s.create_simple((n, *tail)), file_space, out[at : at + n])
    except OSError as e:  # a chunk failing its checksum: name the file, the dataset and its damaged rows
        raise damage_error(ds.file.filename, ds, e) from None
    name = ds.name.lstrip("/")
    checked = out if name in DATA_ARRAYS else out[:0]
    bad = [
        int(rows[at + i]) for at in range(0, len(checked), 256) for i in nonfinite_rows(out[at : at + 256])
    ]
    if bad:  # never trained on: name the file rows (``avel info --verify`` lists every one)
        raise ValueError(
            f"{nonfinite_error(ds.file.filename, {name: bad})}; write the file again without them"
        )
    return out


@dataclass(frozen=True)
class ReadOptions:
    """How a reader turns a split's stored rows into model inputs (``load_splits``' options).

    ``frames``: frames per clip sample (stratified across an event span, or drawn from a stored clip);
    ``eval_frames``: a stored clip's frames for evaluation (0 = all); ``augment`` / ``augment_audio``: the
    training transforms (``avel.data.augment``); ``audio_norm`` (``AUDIO_NORMS``): standardise, then tile
    the span ("clip"), or tile, then standardise ("tiled", the released PMR code's order)."""

    frames: int = 4
    augment: bool = True
    augment_audio: bool = False
    eval_frames: int = 0
    audio_norm: str = "clip"

    def __post_init__(self) -> None:
        check("audio_norm", self.audio_norm, one_of(*AUDIO_NORMS))


# reader(file, sorted rows of one split, device, file meta, options) -> the split as model inputs
Reader = Callable[[h5py.File, np.ndarray, torch.device, dict, ReadOptions], SplitData]


def file_meta(f: h5py.File, path: str | Path) -> dict:
    """The file's attributes (``read_meta``) with its ``kind``, ``path`` and, for a preprocess file, each
    segment's spectrogram width (``segment_width``)."""
    meta = read_meta(f)
    meta["kind"], meta["path"] = str(attr_value(f.attrs["kind"])), str(path)
    if meta["kind"] == PREPROCESS_KIND:
        meta["segment_width"] = segment_window(f["segment_columns"][()])
    return meta


def read_splits(
    path: str | Path,
    choose: Callable[[dict], Reader],
    *,
    device: str | torch.device = "cpu",
    options: ReadOptions = ReadOptions(),
    splits: tuple[str, ...] = SPLIT_NAMES,
) -> DataSplits:
    """The ``splits`` of an avel file on ``device``, each read by the reader ``choose`` picks from the
    file's meta (a model family's: ``avel.families.load_splits``); the others are None. A reader may leave
    rows out (clip samples of AVE: videos without an event), counted in ``meta["skipped_no_event"]``."""
    device = torch.device(device)
    out: dict[str, SplitData | None] = dict.fromkeys(SPLIT_NAMES)
    with open_avel(path) as f:
        meta = file_meta(f, path)
        reader = choose(meta)
        for name in (n for n in SPLIT_NAMES if n in splits):
            rows = _split_rows(f, name)
            out[name] = split = reader(f, rows, device, meta, options)
            if len(rows) > len(split.rows):
                meta.setdefault("skipped_no_event", {})[name] = len(rows) - len(split.rows)
    return DataSplits(out["train"], out["val"], out["test"], meta)


def read_features(f: h5py.File, rows: np.ndarray, device, meta: dict, options: ReadOptions) -> SplitData:
    """Precomputed features (a features file), per segment: labels (N, T)."""
    audio = torch.from_numpy(rows_of(f["audio"], rows, np.float32)).to(device)  # (N, T, Da)
    visual = torch.from_numpy(rows_of(f["visual"], rows, np.float32)).to(device)  # (N, T, H, W, C)
    labels = torch.from_numpy(rows_of(f["segment_labels"], rows, np.int64)).to(device)  # (N, T)
    return SplitData(audio, visual, labels, rows=torch.from_numpy(rows))


def segment_window(segment_columns: np.ndarray) -> int:
    """Columns of spectrogram given to each one-second segment: the shortest second's width."""
    return int(np.diff(np.asarray(segment_columns)).min())


def read_segments(f: h5py.File, rows: np.ndarray, device, meta: dict, options: ReadOptions) -> SplitData:
    """Frames and one second of spectrogram per segment (a preprocess file, end to end): labels (N, T)."""
    augment, augment_audio = options.augment, options.augment_audio
    frames = torch.from_numpy(rows_of(f["frames"], rows)).to(device)  # (N, T, K, S, S, 3) uint8
    spec = torch.from_numpy(rows_of(f["spectrogram"], rows, np.float32)).to(device)  # (N, F, L)
    labels = torch.from_numpy(rows_of(f["segment_labels"], rows, np.int64)).to(device)
    starts = torch.as_tensor(np.asarray(f["segment_columns"][()])[:-1], device=device)  # (T,)
    width = meta["segment_width"]
    cols = starts[:, None] + torch.arange(width, device=device)  # (T, W) column indices per segment

    def transform(audio: Tensor, visual: Tensor, idx: Tensor, train: bool, gen) -> tuple[Tensor, Tensor]:
        a = audio[:, :, cols]  # (B, F, T, W)
        a = a.permute(0, 2, 1, 3).unsqueeze(2)  # (B, T, 1, F, W)
        if train and augment_audio:
            a = spec_augment(a, gen)  # masks per segment
        v = frames_to_input(visual, train, augment, gen)  # (B, T, K, 3, S, S)
        return a, v

    return SplitData(spec, frames, labels, transform, rows=torch.from_numpy(rows))


def tile_span(spec: np.ndarray, lo: int, hi: int, length: int, audio_norm: str = "clip") -> np.ndarray:
    """Columns [lo, hi) of a (F, L) spectrogram tiled along time to ``length`` columns (PMR reference);
    ``audio_norm="tiled"`` then standardises the tiled columns (mean 0, population std 1) as PMR does."""
    span = spec[:, lo:hi]
    reps = -(-length // span.shape[1])
    tiled = np.tile(span, (1, reps))[:, :length]
    if audio_norm == "tiled":  # standardising is affine: this equals standardising the raw tiled span
        tiled = (tiled - tiled.mean()) / (tiled.std() + 1e-9)
    return tiled.astype(np.float32, copy=False)


def clip_length(meta: dict, stored: int) -> int:
    """Columns of a clip sample: those of the transform's ``clip_samples`` if set, else the stored clip's."""
    spec = spec_from_params(meta)
    return num_columns(spec.clip_samples, spec) if spec.clip_samples else stored


def read_event_clips(f: h5py.File, rows: np.ndarray, device, meta: dict, options: ReadOptions) -> SplitData:
    """Clip samples built from each video's event span (a preprocess file; the PMR / OGM-GE setting):
    label = the event class, audio = the span's spectrogram tiled to the clip length (``clip_length``),
    ``options.frames`` frames sampled across the span; a video without an event segment is left out."""
    frames, augment, augment_audio = options.frames, options.augment, options.augment_audio
    seg = rows_of(f["segment_labels"], rows)  # (N, T)
    background = len(meta["classes"]) - 1
    has_event = (seg != background).any(axis=1)  # a video without an event segment has no clip sample
    rows = rows[has_event]
    seg = seg[has_event]
    t_idx = np.arange(seg.shape[1])
    is_event = seg != background
    start = np.where(is_event, t_idx, seg.shape[1]).min(axis=1)  # first event segment
    end = np.where(is_event, t_idx + 1, 0).max(axis=1)  # one past the last event segment
    labels = seg[np.arange(len(seg)), start]
    audio = rows_of(f["spectrogram"], rows, np.float32)  # (N, F, L); an empty split is not an error
    bounds = np.asarray(f["segment_columns"][()])
    length = clip_length(meta, audio.shape[-1])
    out = audio if length == audio.shape[-1] else np.empty((*audio.shape[:2], length), np.float32)
    for i, (a, b) in enumerate(zip(start, end, strict=True)):  # in place when the length is kept
        out[i] = tile_span(audio[i], bounds[a], bounds[b], length, options.audio_norm)
    audio = out
    stored = torch.from_numpy(rows_of(f["frames"], rows)).to(device)  # (N, T, K, S, S, 3)
    k = stored.shape[2]
    span_start = torch.as_tensor(start * k, device=device)
    span_len = torch.as_tensor((end - start) * k, device=device)

    def transform(audio: Tensor, visual: Tensor, idx: Tensor, train: bool, gen) -> tuple[Tensor, Tensor]:
        # `frames` positions stratified across the event span: random within each stratum when training,
        # the stratum centre otherwise; a span shorter than `frames` repeats frames.
        b = idx.shape[0]
        if train:
            u = torch.rand(b, frames, generator=gen).to(idx.device)
        else:
            u = torch.full((b, frames), 0.5, device=idx.device)
        pos = ((torch.arange(frames, device=idx.device) + u) / frames * span_len[idx, None]).long()
        pos = span_start[idx, None] + pos.clamp_max(span_len[idx, None] - 1)  # (B, frames) in T*K
        flat = visual.reshape(b, -1, *visual.shape[3:])  # (B, T*K, S, S, 3)
        picked = flat[torch.arange(b, device=idx.device)[:, None], pos]  # (B, frames, S, S, 3)
        a = audio.unsqueeze(1)  # (B, 1, F, L)
        if train and augment_audio:
            a = spec_augment(a, gen)
        return a, frames_to_input(picked, train, augment, gen)

    return SplitData(
        torch.from_numpy(audio).to(device),
        stored,
        torch.from_numpy(labels.astype(np.int64)).to(device),
        transform,
        rows=torch.from_numpy(rows),
    )


def frame_choice(b: int, stored: int, k: int, train: bool, gen, device) -> Tensor:
    """(B, k) frame indices out of ``stored``: k distinct at random, in time order, for training (PMR §5.2:
    3 of 10 on CREMA-D); the centres of k equal parts otherwise (all frames when k = stored)."""
    if train:
        pick = torch.rand(b, stored, generator=gen).argsort(1)[:, :k]
        return pick.sort(1).values.to(device)
    centres = ((torch.arange(k) + 0.5) * stored / k).long().clamp_max(stored - 1)
    return centres.expand(b, k).to(device)


def read_stored_clips(f: h5py.File, rows: np.ndarray, device, meta: dict, options: ReadOptions) -> SplitData:
    """The stored clips of a clip file (``avel-clips``): ``options.frames`` of each clip's frames drawn at
    random for training and ``options.eval_frames`` (0 = all stored) for evaluation."""
    frames, eval_frames = options.frames, options.eval_frames
    augment, augment_audio = options.augment, options.augment_audio
    spec = torch.from_numpy(rows_of(f["spectrogram"], rows, np.float32)).to(device)  # (N, F, L)
    stored = torch.from_numpy(rows_of(f["frames"], rows)).to(device)  # (N, K, S, S, 3) uint8
    labels = torch.from_numpy(rows_of(f["label"], rows, np.int64)).to(device)
    k_stored = int(f["frames"].shape[1])
    if not 1 <= frames <= k_stored or not 0 <= eval_frames <= k_stored:
        raise ValueError(
            f"{f.filename}: stores {k_stored} frames per clip; frames = {frames} and eval_frames = "
            f"{eval_frames} must be in 1..{k_stored} (eval_frames 0 = all)"
        )
    k_eval = eval_frames or k_stored

    def transform(
        audio: Tensor, visual: Tensor, idx: Tensor, train: bool, gen, k: int = 0
    ) -> tuple[Tensor, Tensor]:
        b = idx.shape[0]
        pos = frame_choice(b, k_stored, k or (frames if train else k_eval), train, gen, idx.device)
        picked = visual[torch.arange(b, device=idx.device)[:, None], pos]  # (B, k, S, S, 3)
        a = audio.unsqueeze(1)  # (B, 1, F, L)
        if train and augment_audio:
            a = spec_augment(a, gen)
        return a, frames_to_input(picked, train, augment, gen)

    split = SplitData(spec, stored, labels, transform, rows=torch.from_numpy(rows))
    split.stored_frames = k_stored
    return split
