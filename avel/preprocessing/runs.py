"""One ``avel preprocess`` run, for every layout: shard files, resume, ``--shard I/N`` and ``--merge``.

A layout (``avel.preprocessing.pipeline`` for AVE, ``avel.preprocessing.clip_pipeline`` for clip sets)
describes its run as a ``Decoding``: the shard id of every row of OUT.h5 (an AVE video, a clip), the
parameters every shard is decoded with, its decoding jobs, and the file's rows. ``run_preprocess`` does the
rest, the same way for every layout:

- each decoded id becomes a shard ``OUT.h5.parts/<id>.shard`` (``avel.preprocessing.assemble``; the folder is
  stamped with the parameters in ``params.json``, shards from other parameters are refused); a re-run,
  after a crash or ``kill -9`` too, skips the finished shards;
- OUT.h5 is filled in ``OUT.h5.tmp`` while decoding goes on (``Assembler``), gets its completion marker
  last and is renamed onto OUT.h5 only when whole; when some ids failed it is written again from the shards
  without their rows; failures go to ``OUT.h5.report.json``; the shards are removed once OUT.h5 exists;
- decoding runs on ``threads`` threads of this process (each video whole; the writer thread writes its
  rows; ``DEFAULT_THREADS`` unless asked), on this thread (``threads`` 1: frames; the writer thread does
  the rest) or in ``workers`` processes (each video into its shard, which the writer reads): the same file
  every way;
- one run per output (``avel.preprocessing.lock``): ``OUT.h5.lock`` for a whole run or ``--merge``,
  ``OUT.h5.shard-I-of-N.lock`` for ``--shard I/N``, which decodes the ids ``shard_ids`` gives it into
  OUT.h5.parts/ and writes ``OUT.h5.shard-I-of-N.report.json``; ``--merge`` writes OUT.h5 from those
  shards alone, the file one run writes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from avel.preprocessing.assemble import Assembler, FileRows, assemble_from_shards, shard_path
from avel.preprocessing.h5 import check_output
from avel.preprocessing.lock import output_lock, write_text_atomic
from avel.preprocessing.workers import one_torch_thread, run_jobs


@dataclass
class PreprocessReport:
    out: str
    rows: int = 0  # rows in the written file
    videos: int = 0  # distinct videos (clips) in the annotations (the list)
    decoded: int = 0  # decoded in this run
    resumed: int = 0  # found finished from an earlier run
    failed: list[dict[str, str]] = field(default_factory=list)  # {id, path, reason}
    seconds: float = 0.0

    @property
    def videos_per_s(self) -> float:
        return self.decoded / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        s = (
            f"{self.out}: {self.rows} rows from {self.videos - len(self.failed)}/{self.videos} videos "
            f"({self.decoded} decoded, {self.resumed} resumed, {self.videos_per_s:.1f} videos/s)"
        )
        if self.failed:
            s += f"; {len(self.failed)} failed, see {self.out}.report.json"
        return s

    def save(self) -> None:
        write_text_atomic(
            f"{self.out}.report.json",
            json.dumps({**asdict(self), "videos_per_s": self.videos_per_s}, indent=2),
        )


# what a decoding job returns besides {id, ok}: its third argument of ``Decoding.jobs``
FRAMES = "frames"  # one thread here: its frames; ``Decoding.finish`` does the rest on the writer thread
ARRAYS = "arrays"  # decoding threads here: its shard is written and its arrays come back for its rows
SHARD = "shard"  # worker processes and --shard runs: its shard is written, nothing comes back
# decoding threads of a one-process run unless asked: on two idle cores 2 threads decode 1.06-1.09x the
# videos/s of 1 with torchcodec, 1.2-1.4x with decord (BENCHMARKS.md, #30)
DEFAULT_THREADS = 2


@dataclass(frozen=True)
class Decoding:
    """What a layout's run decodes and writes; ``run_preprocess`` runs it."""

    row_ids: list[str]  # the shard id of each row of OUT.h5, in row order (AVE: a video for several rows)
    params: dict[str, Any]  # what every shard is decoded with (OUT.h5.parts/params.json)
    jobs: Callable[[list[str], Path, str], list]  # (ids, parts folder, FRAMES | ARRAYS | SHARD) -> their jobs
    # a job -> {id, ok} (SHARD), {id, ok, arrays} (ARRAYS), {id, ok, frames, ...} (FRAMES) or
    # {id, ok, path, reason}; never raises
    decode: Callable[[Any], dict[str, Any]]
    file_rows: Callable[[set[str]], FileRows]  # OUT.h5 without the rows of these (failed) ids
    # a result decoded in this process that carries its data ("frames"): finish it on the writer thread
    # (AVE: audio, shard and rows); other results have written their shard
    finish: Callable[[Assembler, dict[str, Any]], dict[str, Any] | None] | None = None

    @property
    def ids(self) -> list[str]:
        return list(dict.fromkeys(self.row_ids))


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    """(I, N) with N >= 1 and 0 <= I < N, or a one-line error."""
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {index}/{count}: needs I/N with N >= 1 and 0 <= I < N (I counts from 0)")
    return index, count


def shard_ids(ids: list[str], index: int, count: int) -> list[str]:
    """Shard ``index`` of ``count``: every ``count``-th distinct id in list order, from the ``index``-th
    (0-based), so the shards are disjoint, cover every id and differ by at most one."""
    return ids[index::count]


def run_preprocess(
    d: Decoding,
    out_h5: str | Path,
    *,
    workers: int = 1,
    threads: int | None = None,
    progress: bool = True,
    wait: bool = False,
    shard: tuple[int, int] | None = None,
    merge: bool = False,
) -> PreprocessReport:
    """The whole run (``shard`` None; ``merge``: from the shards of every ``--shard I/N`` run only) or one
    shard of it, under its lock (``wait``: wait for a run holding it, else refuse naming it); decoding on
    ``workers`` processes or ``threads`` threads of this one (``check_parallel``)."""
    out_h5 = Path(out_h5)
    check_output(out_h5)
    threads = check_parallel(workers, threads)
    if shard is not None:
        index, count = check_shard(shard)
        with output_lock(f"{out_h5}.shard-{index}-of-{count}", "avel preprocess --shard", wait=wait):
            with one_torch_thread():
                return _run_shard(d, out_h5, index, count, workers, threads, progress)
    with output_lock(out_h5, "avel preprocess", wait=wait), one_torch_thread():
        return _run_whole(d, out_h5, workers, threads, progress, merge)


def check_parallel(workers: int, threads: int | None) -> int:
    """The decoding threads of a run: ``threads``, or when None ``DEFAULT_THREADS`` with one process and
    1 with worker processes; a one-line error unless --workers N (processes) and --threads N (threads of
    this process) are >= 1 and not both above 1."""
    if threads is None:
        threads = DEFAULT_THREADS if workers == 1 else 1
    for name, n in (("workers", workers), ("threads", threads)):
        if n < 1:
            raise ValueError(f"--{name} must be >= 1, got {n}")
    if workers > 1 and threads > 1:
        raise ValueError(
            f"--workers {workers} and --threads {threads}: choose one (decoding processes or threads)"
        )
    return threads


def decode_all(
    d: Decoding, jobs: list, workers: int, progress: bool, threads: int = 1
) -> Iterator[dict[str, Any]]:
    """``d.decode`` over ``jobs`` as they finish (``run_jobs``), with a rich progress bar when asked."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed or 0:.1f} videos/s")

    bar = Progress(
        "preprocess", BarColumn(), MofNCompleteColumn(), Rate(), TimeRemainingColumn(), disable=not progress
    )
    with bar:
        task = bar.add_task("decode", total=len(jobs))
        for r in run_jobs(d.decode, jobs, workers, threads=threads, ordered=threads > 1):
            bar.advance(task)
            yield r


def _failure(r: dict[str, Any]) -> dict[str, str]:
    return {k: r[k] for k in ("id", "path", "reason")}


def _run_shard(
    d: Decoding, out_h5: Path, index: int, count: int, workers: int, threads: int, progress: bool
) -> PreprocessReport:
    """Shard ``index`` of ``count``: its ids' shard files in OUT.h5.parts/ and its report (no OUT.h5)."""
    parts = parts_dir(out_h5, d.params)
    ids = shard_ids(d.ids, index, count)
    report = PreprocessReport(f"{out_h5}.shard-{index}-of-{count}", videos=len(ids))
    t0 = time.perf_counter()
    todo = [i for i in ids if not shard_path(parts, i).is_file()]
    report.resumed = len(ids) - len(todo)
    jobs = d.jobs(todo, parts, SHARD)
    failed = [r for r in decode_all(d, jobs, workers, progress, threads) if not r["ok"]]
    report.failed = sorted(map(_failure, failed), key=lambda f: f["id"])
    report.decoded = len(todo) - len(failed)
    done = set(ids) - {f["id"] for f in report.failed}
    report.rows = sum(1 for i in d.row_ids if i in done)
    report.seconds = time.perf_counter() - t0
    report.save()
    return report


def shard_failures(out_h5: Path) -> dict[str, dict[str, Any]]:
    """The failed ids of every shard report of OUT.h5 (OUT.h5.shard-*-of-*.report.json), by id."""
    failed = {}
    for path in sorted(out_h5.parent.glob(f"{out_h5.name}.shard-*-of-*.report.json")):
        for f in json.loads(path.read_text())["failed"]:
            failed[f["id"]] = {"id": f["id"], "ok": False, "path": f["path"], "reason": f["reason"]}
    return failed


def _run_whole(
    d: Decoding, out_h5: Path, workers: int, threads: int, progress: bool, merge: bool
) -> PreprocessReport:
    parts = parts_dir(out_h5, d.params)
    ids = d.ids
    report = PreprocessReport(str(out_h5), videos=len(ids))
    t0 = time.perf_counter()
    failed_in_shards = shard_failures(out_h5) if merge else {}
    if merge:
        missing = [i for i in ids if i not in failed_in_shards and not shard_path(parts, i).is_file()]
        if missing:
            raise ValueError(
                f"{parts}: {len(missing)} of {len(ids)} videos have no shard (first: {missing[0]}); "
                "run every --shard I/N to the end before --merge"
            )
    asm = Assembler(out_h5, d.file_rows(set()))
    try:
        todo = []
        for i in ids:
            shard = shard_path(parts, i)
            if shard.is_file():
                report.resumed += 1
                asm.submit(asm.write_shard_file, i, shard)
            elif i in failed_in_shards:  # --merge: failed in its shard run, as it would in one run
                asm.failed.append(failed_in_shards[i])
            else:
                todo.append(i)
        mode = SHARD if workers > 1 else ARRAYS if threads > 1 else FRAMES
        for r in decode_all(d, d.jobs(todo, parts, mode), workers, progress, threads):
            if not r["ok"]:
                asm.failed.append(r)
            elif "arrays" in r:
                asm.submit(asm.write, r["id"], r["arrays"])
            elif d.finish is not None and "frames" in r:
                asm.submit(d.finish, asm, r)
            else:
                asm.submit(asm.write_shard_file, r["id"], shard_path(parts, r["id"]))
        asm.wait()
    except BaseException:
        asm.close(keep=False)
        raise
    report.failed = [_failure(r) for r in asm.failed]
    failed = {f["id"] for f in report.failed}
    report.decoded = len(todo) - len(failed.intersection(todo))
    if failed:  # the file lacks their rows: write it again, from the shards, without them
        asm.close(keep=False)
        report.rows = assemble_from_shards(out_h5, parts, d.file_rows(failed))
    else:
        report.rows = asm.close(keep=True)
    report.seconds = time.perf_counter() - t0
    shutil.rmtree(parts)
    report.failed.sort(key=lambda f: f["id"])
    report.save()
    return report


def parts_dir(out_h5: Path, params: dict[str, Any]) -> Path:
    """OUT.h5.parts/, created with params.json; shards from other parameters are an error."""
    parts = Path(f"{out_h5}.parts")
    stamp = parts / "params.json"
    if stamp.is_file():
        old = json.loads(stamp.read_text())
        if old != params:
            diff = {k: (old.get(k), v) for k, v in params.items() if old.get(k) != v}
            raise ValueError(
                f"{parts}: unfinished shards from another run with different parameters "
                f"(found vs needed: {diff}); delete that folder to start over"
            )
    else:
        parts.mkdir(parents=True, exist_ok=True)  # --shard runs may start at once: stamp atomically
        tmp = parts / f"params.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(params))
        os.replace(tmp, stamp)
    return parts
