"""The PMR paper's experiment grids as tables (PMR Tables 1, 2, 5, 6 and Table 4 for AVEL).

A grid is a list of cells (row × column, each a set of config overrides); every cell is trained for seeds
0..n-1 with ``run_training`` into ``<grid dir>/<cell name>/seed<k>``, one run after another. The grid
directory is self-describing (``grid.json``), resumable (a run with ``results.json`` is never re-run, a
partial one resumes from its ``last.pt``) and always shows its current table (``table.md``,
``table.csv``, rewritten after every finished run). Cells where a rebalancing method does not apply
(OGM-GE needs split logits; PMR needs both modalities) are marked "n/a" with the reason, not trained.

    grid = build_grid("optimizers", model="resnet18")
    table = run_grid("optimizers", Path("runs/table6"), config=Path("configs/table6_optimizers.toml"))
    print(table.markdown())
"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from avel import families
from avel.balance.pmr import released_source
from avel.engine import config as config_mod
from avel.engine.config import TrainConfig, load_config
from avel.engine.provenance import describe
from avel.experiments import published
from avel.preprocessing.h5 import attr_value
from avel.preprocessing.lock import OutputLocked, write_text_atomic
from avel.rules import check, one_of

GRID_KINDS = ("optimizers", "fusions", "subset", "balancers", "intermediate")
FUSION_LABEL = {"concat": "concat", "sum": "sum", "film": "FiLM", "gated": "gated", "dmrn": "DMRN"}


def fusion_label(fusion: str) -> str:
    """A fusion's column label in the tables (its own name where ``FUSION_LABEL`` has none)."""
    return FUSION_LABEL.get(fusion, fusion)


SUBSETS = ("0.01", "0.05", "0.1", "0.5", "1.0")
BASELINE, PMR = {"balance": "none"}, {"balance": "pmr"}
UNIMODAL_NA = "pmr needs both modalities; uni-modal runs use --balance none"
CLEAN_CAPTION = "Test accuracy (%), mean ± sample std over seeds (selected on val); (paper: published value)."
RELEASED_CAPTION = (
    "**RELEASED PROTOCOL: reads the test split while training** (PMR's prototypes from a tenth of test, the "
    "best test epoch): test accuracy (%) of the best test epoch, mean ± sample std over seeds; not a clean "
    "result; (paper: published value)."
)
RELEASED_TRAIN_CAPTION = RELEASED_CAPTION.replace(  # resnet18: the released CREMA-D script
    "PMR's prototypes from a tenth of test", "PMR's prototypes from a fresh tenth of train every epoch"
)

TITLES = {
    "optimizers": "PMR Table 6: optimizers, without and with PMR",
    "fusions": "PMR Table 1: fusion methods, without and with PMR, and uni-modal baselines",
    "subset": "PMR Table 5: size of the prototype subset",
    "balancers": "PMR Table 2: rebalancing methods",
    "intermediate": "PMR Table 3: intermediate fusions (MMTM, CentralNet), without and with PMR",
}


def published_values(grid: dict[str, Any]) -> dict[tuple[str, str], float]:
    """The paper's numbers for a grid: CREMA-D's when the grid's data file is a CREMA-D clip file."""
    dataset = "crema-d" if grid.get("dataset") == "crema-d" else "ave"
    return published.PUBLISHED[dataset].get((grid["kind"], grid["model"]), {})


def data_layout(path: str) -> str:
    """The dataset a data file holds, for the published column: its ``layout`` attribute ("crema-d",
    "manifest"), else "ave"."""
    try:
        with h5py.File(path, "r") as f:
            return str(attr_value(f.attrs.get("layout", "ave")))
    except (OSError, FileNotFoundError):
        return "ave"


# ----------------------------------------------------------------------------------------------- cells


@dataclass
class Cell:
    """One entry of a table: trained with ``overrides`` on top of the grid's config, or n/a."""

    row: str
    column: str
    overrides: dict[str, Any]
    na_reason: str | None = None

    @property
    def name(self) -> str:
        """Directory name of the cell inside the grid directory, e.g. ``sgd__pmr``."""
        return f"{_slug(self.row)}__{_slug(self.column)}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _cells(rows: list[tuple[str, dict]], columns: list[tuple[str, dict]]) -> list[Cell]:
    return [Cell(r, c, {**ro, **co}) for r, ro in rows for c, co in columns]


def _optimizers(model: str) -> list[Cell]:
    rows = [
        ("SGD", {"optimizer": "sgd"}),
        ("AdaGrad", {"optimizer": "adagrad"}),
        ("Adam", {"optimizer": "adam"}),
    ]
    return _cells(rows, [("baseline", BASELINE), ("PMR", PMR)])


def _fusions(model: str) -> list[Cell]:
    # the model's fusions that Table 1 compares (FUSION_LABEL): MMTM and CentralNet are Table 3's
    family = families.get(model)
    rows = [(FUSION_LABEL[f], {"fusion": f}) for f in family.fusions if f in FUSION_LABEL]
    cells = _cells(rows, [("baseline", BASELINE), ("PMR", PMR)])
    for modality in family.modality_names:  # audio / visual; gray / colored on CG-MNIST
        label = f"{modality} only"
        cells.append(Cell(label, "baseline", {"modality": modality, **BASELINE}))
        cells.append(Cell(label, "PMR", {"modality": modality, **PMR}, na_reason=UNIMODAL_NA))
    return cells


def _subset(model: str) -> list[Cell]:
    rows = [("baseline", BASELINE)]
    rows += [(f"PMR, {float(s) * 100:g}%", {**PMR, "pmr_subset": s}) for s in SUBSETS]
    return _cells(rows, [("accuracy", {})])


# BalanceBenchmark's optimization-, forward- and data-level methods (issue 28); Greedy needs MMTM: it is a
# column of the intermediate grid instead
def _balancers(model: str) -> list[Cell]:
    """Table 2: each registered balancer's ``grid_rows`` (default: one row, its ``method`` or name)."""
    from avel.balance import BALANCERS

    rows = []
    for name, cls in BALANCERS.items():
        own = cls.grid_rows if cls.grid_rows is not None else ((cls.method or name, {}),)
        rows += [(label, {"balance": name, **overrides}) for label, overrides in own]
    family = families.get(model)
    rows = [r for r in rows if r[0] not in family.grid_rows_left_out]
    columns = [(fusion_label(f), {"fusion": f}) for f in family.grid_fusions]
    paper = 1 + max(i for i, r in enumerate(rows) if r[1]["balance"] == "pmr")  # PMR's Table 2 ends with PMR
    return (
        _cells(rows[:paper], columns)
        + _balance_benchmark_cells(model, columns)
        + _cells(rows[paper:], columns)
    )


def _balance_benchmark_cells(model: str, columns: list[tuple[str, dict]]) -> list[Cell]:
    """BalanceBenchmark's objective-level methods; UMT's teachers are the grid's uni-modal runs of the
    same seed (rows "<modality> only", trained in the first column only: the fusion does not apply)."""
    first = columns[0][0]
    cells = _cells([("MMCosine", {"balance": "mmcosine"})], columns)
    teachers = {}
    for slot, modality in zip(("audio", "visual"), families.get(model).modality_names, strict=True):
        label = f"{modality} only"
        for col, co in columns:
            na = None if col == first else f"uni-modal: one run serves every fusion (the {first} column)"
            cells.append(Cell(label, col, {**co, "modality": modality, **BASELINE}, na_reason=na))
        teachers[f"umt_teacher_{slot}"] = f"{{grid}}/{_slug(label)}__{_slug(first)}/seed{{seed}}/best.pt"
    rows = [
        ("UMT", {"balance": "umt", **teachers}),
        ("UME", {"balance": "ume"}),
        ("MBSD", {"balance": "mbsd"}),
        ("CML", {"balance": "cml"}),
        ("MMPareto", {"balance": "mmpareto"}),
        ("LFM", {"balance": "lfm"}),
    ]
    return cells + _cells(rows, columns)


def _intermediate(model: str) -> list[Cell]:
    rows = [("MMTM", {"fusion": "mmtm"}), ("CentralNet", {"fusion": "centralnet"})]
    cells = _cells(rows, [("naive", BASELINE), ("PMR", PMR), ("Greedy", {"balance": "greedy"})])
    family = families.get(model)
    for cell in cells:  # MMTM / CentralNet sit between the stages of two CNN encoders
        if cell.overrides["fusion"] not in family.fusions:
            cell.na_reason = f"{cell.row} fuses inside the encoders' stages (no version for {family.models})"
    return cells


BUILDERS: dict[str, Callable[[str], list[Cell]]] = {
    "optimizers": _optimizers,
    "fusions": _fusions,
    "subset": _subset,
    "balancers": _balancers,
    "intermediate": _intermediate,
}


def build_grid(kind: str, model: str = "resnet18") -> list[Cell]:
    """The cells of one grid for one model family; n/a cells carry the reason they are not trained."""
    check("grid", kind, one_of(*GRID_KINDS))
    families.get(model)  # an unknown family: the valid ones
    cells = BUILDERS[kind](model)
    for cell in cells:
        if cell.na_reason is None:
            cell.na_reason = not_applicable(load_config(None, {"model": model, **cell.overrides}))
    return cells


def not_applicable(cfg: TrainConfig) -> str | None:
    """Why ``cfg``'s rebalancing method cannot train ``cfg``'s model, or None when it can."""
    from avel.engine.train import check_applicable

    return check_applicable(cfg)


# ----------------------------------------------------------------------------------------------- tables


@dataclass
class CellSummary:
    """A cell's finished runs: test accuracy of each seed and the run directories (relative to the grid)."""

    cell: Cell
    seeds: int
    accuracies: list[float] = field(default_factory=list)
    run_dirs: list[str] = field(default_factory=list)
    published: float | None = None
    measures: list[dict[str, Any]] = field(default_factory=list)  # BalanceBenchmark's, one per seed
    stopped: list[str] = field(default_factory=list)  # "seedK: epoch E" of runs stopped at a non-finite step

    def measure(self, key: str) -> float | None:
        """The mean over the finished seeds of one of BalanceBenchmark's measures (None where absent)."""
        values = [float(m[key]) for m in self.measures if m.get(key) is not None]
        return statistics.fmean(values) if values else None

    @property
    def na_reason(self) -> str | None:
        return self.cell.na_reason

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.accuracies) if self.accuracies else None

    @property
    def std(self) -> float | None:
        return sample_std(self.accuracies) if self.accuracies else None

    def text(self) -> str:
        """``65.4 ± 0.3`` in %, one decimal; ``n/a``; ``—`` when no seed has finished."""
        if self.na_reason:
            return "n/a"
        if not self.accuracies:
            return "stopped" if self.stopped else "—"
        return format_mean_std(self.accuracies)


def sample_std(values: list[float]) -> float:
    """Sample standard deviation over seeds (n − 1 in the denominator); 0 for one seed."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def format_mean_std(accuracies: list[float]) -> str:
    """Mean ± sample std of accuracies in [0, 1], printed in % with one decimal."""
    return f"{100 * statistics.fmean(accuracies):.1f} ± {100 * sample_std(accuracies):.1f}"


@dataclass
class Table:
    """A grid's results: ``rows`` is [(row label, [CellSummary per column])], in the grid's order."""

    title: str
    header: str  # the command and config that produced the grid
    columns: list[str]
    rows: list[tuple[str, list[CellSummary]]]
    produced_on: list[str] = field(default_factory=list)  # provenance.describe() of the finished runs
    # BalanceBenchmark's published (accuracy, macro-F1) per row label, on a CREMA-D-layout balancers grid
    reference: dict[str, tuple[float, float]] = field(default_factory=dict)
    released: bool = False  # the released protocol's grid: it reads test while training (labelled)
    model: str = ""  # the model family (where the released protocol's prototypes come from)

    def cell(self, row: str, column: str) -> CellSummary:
        for label, cells in self.rows:
            if label == row:
                return cells[self.columns.index(column)]
        raise KeyError(f"no row {row!r}; rows: {[r for r, _ in self.rows]}")

    def modality_names(self) -> tuple[str, str]:
        """The family's names of its two modalities (audio / visual where the family is not registered)."""
        family = families.FAMILIES.get(self.model)
        return tuple(family.modality_names) if family else ("audio", "visual")

    def caption(self) -> str:
        if not self.released:
            return CLEAN_CAPTION
        return RELEASED_TRAIN_CAPTION if released_source(self.model) == "train" else RELEASED_CAPTION

    def markdown(self) -> str:
        """Mean ± std of test accuracy (%) over seeds, each cell linking to its run directories."""
        reasons: list[str] = []
        lines = [
            f"## {self.title}",
            "",
            self.header,
            "",
            *[f"Produced on {p}." for p in self.produced_on],
            *([""] if self.produced_on else []),
            self.caption(),
            "",
            "| | " + " | ".join(self.columns) + " |",
            "|---|" + "---|" * len(self.columns),
        ]
        for label, cells in self.rows:
            lines.append(f"| {label} | " + " | ".join(_md_cell(s, reasons) for s in cells) + " |")
        if reasons:
            lines.append("")
            lines += [f"[^{i}]: {reason}" for i, reason in enumerate(reasons, 1)]
        lines += self.measures_markdown()
        return "\n".join(lines) + "\n"

    def measures_markdown(self) -> list[str]:
        """BalanceBenchmark's three measures of every trained cell (means over its finished seeds)."""
        cells = [(label, s) for label, row in self.rows for s in row if s.measures and not s.na_reason]
        if not cells:
            return []
        a, v = self.modality_names()
        lines = [
            "",
            "BalanceBenchmark's measures (avel.engine.measures; mean over the finished seeds, test split): "
            f"accuracy and macro-F1 (%); imbalance degree = |linear-probe accuracy of {a} − of {v}| "
            "(%, BalanceMM's probe: a new linear head on the frozen encoders, each modality's share); "
            "each encoder probed alone (%); Shapley values of each modality (accuracy points); training "
            "time per epoch, peak memory of the training process, parameters the method adds.",
            "",
            "| row | column | "
            + " | ".join(h.format(a=a, v=v) for h, _, _ in MEASURE_COLUMNS)
            + " |"
            + (" BalanceBenchmark CREMA-D acc / F1 |" if self.reference else ""),
            "|---|---|" + "---|" * (len(MEASURE_COLUMNS) + bool(self.reference)),
        ]
        for label, s in cells:
            values = " | ".join(_measure_text(s, keys, fmt) for _, keys, fmt in MEASURE_COLUMNS)
            if self.reference:
                ref = self.reference.get(label)
                values += " | " + (
                    f"{ref[0]:.1f} / {ref[1]:.1f}" if ref and s.cell.column == "concat" else ""
                )
            lines.append(f"| {label} | {s.cell.column} | {values} |")
        return lines

    def csv(self) -> str:
        """One line per cell: row, column, mean and std in %, seeds done, each seed's accuracy, n/a reason,
        run directories, the seeds stopped at a non-finite step, then the means of BalanceBenchmark's
        measures (``CSV_MEASURES``)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(
            [
                "row",
                "column",
                "mean",
                "std",
                "done",
                "seeds",
                "accuracies",
                "published",
                "na_reason",
                "run_dirs",
                "stopped",
                *CSV_MEASURES,
            ]
        )
        for label, cells in self.rows:
            for col, s in zip(self.columns, cells, strict=True):
                pct = [f"{100 * a:.2f}" for a in s.accuracies]
                w.writerow([
                    label, col,
                    "" if s.mean is None else f"{100 * s.mean:.2f}",
                    "" if s.std is None else f"{100 * s.std:.2f}",
                    len(s.accuracies), s.seeds, ";".join(pct),
                    "" if s.published is None else s.published,
                    s.na_reason or "", ";".join(s.run_dirs), ";".join(s.stopped),
                    *["" if s.measure(k) is None else f"{s.measure(k):.6g}" for k in CSV_MEASURES],
                ])  # fmt: skip
        return buf.getvalue()


# (header, measure keys shown as a / b, format): fractions in %, the rest as numbers; {a} / {v}: the family's
# modality names (audio / visual; gray / colored on CG-MNIST)
MEASURE_COLUMNS = [
    ("accuracy", ("accuracy",), "pct"),
    ("macro-F1", ("macro_f1",), "pct"),
    ("imbalance degree", ("imbalance_degree",), "pct"),
    ("probe alone {a} / {v}", ("probe_audio_alone_accuracy", "probe_visual_alone_accuracy"), "pct"),
    ("Shapley {a} / {v}", ("shapley_audio", "shapley_visual"), "pct"),
    ("s / epoch", ("epoch_time_s",), "num"),
    ("peak MiB", ("peak_memory_mib",), "int"),
    ("extra params", ("extra_parameters",), "int"),
]


CSV_MEASURES = (  # BalanceBenchmark's measures in table.csv: means over the finished seeds (fractions)
    "macro_f1",
    "imbalance_degree",
    "probe_audio_accuracy",
    "probe_visual_accuracy",
    "probe_audio_alone_accuracy",
    "probe_visual_alone_accuracy",
    "shapley_audio",
    "shapley_visual",
    "epoch_time_s",
    "peak_memory_mib",
    "extra_parameters",
)


def _measure_text(s: CellSummary, keys: tuple[str, ...], fmt: str) -> str:
    values = [s.measure(k) for k in keys]
    if any(v is None for v in values):
        return "—"
    text = {"pct": lambda v: f"{100 * v:.1f}", "num": lambda v: f"{v:.2f}", "int": lambda v: f"{v:,.0f}"}[fmt]
    return " / ".join(text(v) for v in values)


def _md_cell(s: CellSummary, reasons: list[str]) -> str:
    if s.na_reason:
        if s.na_reason not in reasons:
            reasons.append(s.na_reason)
        return f"n/a[^{reasons.index(s.na_reason) + 1}]"
    text = s.text()
    if s.accuracies:
        links = " ".join(f"[{Path(d).name}]({d})" for d in s.run_dirs)
        done = f"{len(s.accuracies)}/{s.seeds}: " if len(s.accuracies) < s.seeds else ""
        text += f" ({done}{links})"
    if s.stopped:  # never averaged in: a run stopped at a non-finite step has no test accuracy
        text += f" (non-finite loss, training stopped: {', '.join(s.stopped)})"
    if s.published is not None:
        text += f" (paper {s.published:.1f})"
    return text


# ----------------------------------------------------------------------------------------------- grid dirs


def _read_grid(out_dir: Path) -> dict[str, Any]:
    path = Path(out_dir) / "grid.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{out_dir}: not a grid directory (no grid.json; `avel ablate KIND DIR` makes one)"
        )
    return json.loads(path.read_text())


def _grid_cells(grid: dict[str, Any], out_dir: Path) -> list[Cell]:
    """The grid's cells with the n/a reasons found while running (stored in ``<cell>/na.json``)."""
    cells = [Cell(c["row"], c["column"], c["overrides"], c.get("na_reason")) for c in grid["cells"]]
    for cell in cells:
        na = out_dir / cell.name / "na.json"
        if cell.na_reason is None and na.is_file():
            cell.na_reason = json.loads(na.read_text())["reason"]
    return cells


def stopped(run_dir: Path) -> dict[str, Any] | None:
    """``RUN/stopped.json`` of a run stopped at a non-finite step (avel.engine.train), or None."""
    from avel.engine.train import STOPPED

    path = run_dir / STOPPED
    return json.loads(path.read_text()) if path.is_file() else None


def _results(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def tabulate(out_dir: Path) -> Table:
    """Re-tabulate a grid directory from its ``grid.json`` and the runs' ``results.json`` files."""
    out_dir = Path(out_dir)
    grid = _read_grid(out_dir)
    summaries, produced_on = [], {}
    for cell in _grid_cells(grid, out_dir):
        summary = CellSummary(cell, grid["seeds"])
        for seed in range(grid["seeds"]):
            res = _results(out_dir / cell.name / f"seed{seed}")
            stop = stopped(out_dir / cell.name / f"seed{seed}") if res is None else None
            if stop is not None and not cell.na_reason:
                summary.stopped.append(f"seed{seed} at epoch {stop['epoch']}")
            if res is not None and not cell.na_reason:
                summary.accuracies.append(float(res["test_accuracy"]))
                if res.get("measures"):
                    summary.measures.append(res["measures"])
                summary.run_dirs.append(f"{cell.name}/seed{seed}")
                produced_on[describe(res.get("provenance", {}))] = None
        summaries.append(summary)
    table = _table(grid, summaries)
    table.produced_on = list(produced_on)
    return table


def _table(grid: dict[str, Any], summaries: list[CellSummary]) -> Table:
    """Arrange cell summaries in the grid's row and column order, with the published values."""
    paper = published_values(grid)
    columns = list(dict.fromkeys(s.cell.column for s in summaries))
    rows: dict[str, dict[str, CellSummary]] = {}
    for s in summaries:
        s.published = paper.get((s.cell.row, s.cell.column))
        rows.setdefault(s.cell.row, {})[s.cell.column] = s
    missing = "not part of this grid"
    table_rows = [
        (label, [by_col.get(c) or CellSummary(Cell(label, c, {}, missing), 0) for c in columns])
        for label, by_col in rows.items()
    ]
    released = (grid.get("overrides") or {}).get("protocol") == "released"
    title = f"{TITLES[grid['kind']]} ({grid['model']})" + (", RELEASED PROTOCOL" if released else "")
    table = Table(title, _header(grid), columns, table_rows, released=released, model=grid["model"])
    reference = published.REFERENCE.get((grid.get("dataset", "ave"), grid["kind"], grid["model"]))
    if reference is not None:
        table.reference = reference
    return table


def _header(grid: dict[str, Any]) -> str:
    return f"`{grid['command']}`" + (f" (config {grid['config']})" if grid.get("config") else "")


def command_line(
    kind: str, out_dir: Path, config: Path | None, seeds: int, model: str, overrides: dict
) -> str:
    """The ``avel ablate`` command that (re)produces a grid."""
    parts = ["avel ablate", kind, str(out_dir)]
    if "data" in overrides:
        parts += ["--data", str(overrides["data"])]
    if config:
        parts += ["--config", str(config)]
    parts += ["--model", model, "--seeds", str(seeds)]
    parts += [f"--set {k}={_cli_value(v)}" for k, v in overrides.items() if k not in ("model", "data")]
    return " ".join(parts)


def _cli_value(v: Any) -> str:
    if isinstance(v, list | tuple):
        return ",".join(map(str, v))
    return str(v).lower() if isinstance(v, bool) else str(v)


def write_tables(out_dir: Path) -> Table:
    """Write ``table.md`` and ``table.csv`` into the grid directory; returns the table."""
    table = tabulate(out_dir)
    write_text_atomic(Path(out_dir) / "table.md", table.markdown())
    write_text_atomic(Path(out_dir) / "table.csv", table.csv())
    return table


def run_state(run_dir: Path) -> str:
    """``done (test 65.4%)``, ``partial (epoch k of n)`` or ``not started``."""
    res = _results(run_dir)
    if res is not None:
        return f"done (test {100 * res['test_accuracy']:.1f}%)"
    stop = stopped(run_dir)
    if stop is not None:
        return f"stopped (non-finite loss at epoch {stop['epoch']})"
    metrics = run_dir / "metrics.jsonl"
    done = len([ln for ln in metrics.read_text().splitlines() if ln.strip()]) if metrics.is_file() else 0
    if done == 0:
        return "not started"
    cfg_path = run_dir / "config.json"
    epochs = json.loads(cfg_path.read_text())["epochs"] if cfg_path.is_file() else "?"
    return f"partial (epoch {done} of {epochs})"


def list_grid(out_dir: Path) -> str:
    """Each cell and seed of a grid directory and its state: done / partial (epoch k of n) / not started."""
    out_dir = Path(out_dir)
    grid = _read_grid(out_dir)
    lines = [
        f"{TITLES[grid['kind']]} ({grid['model']}), {grid['seeds']} seed(s), in {out_dir}",
        _header(grid),
    ]
    counts: dict[str, int] = {}
    for cell in _grid_cells(grid, out_dir):
        label = f"{cell.row} / {cell.column}"
        if cell.na_reason:
            lines.append(f"  {label:32s} n/a: {cell.na_reason}")
            counts["n/a"] = counts.get("n/a", 0) + 1
            continue
        for seed in range(grid["seeds"]):
            state = run_state(out_dir / cell.name / f"seed{seed}")
            lines.append(f"  {label:32s} {cell.name}/seed{seed}  {state}")
            key = state.split(" ")[0] if not state.startswith("not") else "not started"
            counts[key] = counts.get(key, 0) + 1
    lines.append(", ".join(f"{k}: {v}" for k, v in counts.items()))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- running


def run_grid(
    kind: str,
    out_dir: Path,
    *,
    config: Path | None = None,
    seeds: int = 3,
    model: str | None = None,
    overrides: dict | None = None,
    dry_run: bool = False,
    rows: list[str] | None = None,
    columns: list[str] | None = None,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
) -> Table:
    """Train every applicable cell of a grid for seeds 0..seeds-1 (skipping finished runs); returns the table.

    Precedence for each run: config defaults < ``config`` file < ``overrides`` < the cell's overrides <
    seed and run directory. ``dry_run`` prints the cells, their overrides and run directories and writes
    nothing. ``rows`` / ``columns`` train only those rows / columns (e.g. to share a grid between machines,
    or to add a PMR variant without re-training the baselines); the table shows all. ``progress`` sets each
    run's progress bar (None: the config's); it is not part of the grid, like the run's own option.
    """
    out_dir = Path(out_dir)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    model = model or load_config(config, overrides).model
    cells = build_grid(kind, model)
    # every cell's config is resolved now: an unknown key fails before anything is trained
    configs = {c.name: load_config(config, {**overrides, "model": model, **c.overrides}) for c in cells}
    for cell in cells:  # the grid's config (e.g. a balancer option) may decide applicability
        cell.na_reason = cell.na_reason or not_applicable(configs[cell.name])
    grid = _grid_record(kind, out_dir, config, seeds, model, overrides, cells)
    grid["dataset"] = data_layout(next(iter(configs.values())).data)
    if dry_run:
        log(_describe(grid, cells, out_dir))
        return _dry_table(grid, cells)
    _check_names("row", [c.row for c in cells], rows)
    _check_names("column", [c.column for c in cells], columns)
    if not next(iter(configs.values())).data:
        raise ValueError("no data file given (`data = ...` in the config, or --data / --set data=FILE)")
    _write_grid(out_dir, grid)
    runnable = [
        c for c in cells
        if not c.na_reason and (rows is None or c.row in rows) and (columns is None or c.column in columns)
    ]  # fmt: skip
    for i, cell in enumerate(runnable, 1):
        for seed in range(seeds):
            run_dir = out_dir / cell.name / f"seed{seed}"
            if (run_dir / "results.json").is_file():
                continue  # finished: never re-run
            stop = stopped(run_dir)
            if stop is not None:  # re-training would stop at the same step: reported, not re-run
                log(f"stopped earlier (delete its stopped.json to train it again): {stop['message']}")
                continue
            log(f"[{i}/{len(runnable)}] {cell.row} / {cell.column}, seed {seed} -> {run_dir}")
            try:
                cfg = configs[cell.name]
                cfg = cfg if progress is None else config_mod.apply(cfg, {"progress": progress}, "--progress")
                if not _train(cfg, seed, run_dir, cell, log):
                    break
            except OutputLocked as e:  # another grid process trains this seed: go on with the next one
                log(f"skipped: {e}")
                continue
            write_tables(out_dir)
    return write_tables(out_dir)


def _check_names(what: str, names: list[str], chosen: list[str] | None) -> None:
    names = list(dict.fromkeys(names))
    unknown = sorted(set(chosen or []) - set(names))
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; {what}s of this grid: {names}")


def _train(cfg: TrainConfig, seed: int, run_dir: Path, cell: Cell, log: Callable[[str], None]) -> bool:
    """Train one seed of a cell; a method that turns out not to apply marks the cell n/a (returns False)."""
    from avel.engine.train import NonFiniteError, NotApplicable, run_training

    # a data path with "{seed}" names one file per seed (e.g. features from seed-s encoders); UMT's teachers
    # are "{grid}/<cell>/seed{seed}/best.pt": the grid's uni-modal runs of this seed
    changes = {"seed": seed, "out": str(run_dir), "data": cfg.data.replace("{seed}", str(seed))}
    for key in ("umt_teacher_audio", "umt_teacher_visual"):
        value = config_mod.value_of(cfg, key)
        if value:
            changes[key] = value.replace("{seed}", str(seed)).replace("{grid}", str(run_dir.parent.parent))
    cfg = config_mod.apply(cfg, changes, "grid")
    try:
        run_training(cfg, log=log)
    except NotApplicable as e:
        cell.na_reason = e.reason
        write_text_atomic(run_dir.parent / "na.json", json.dumps({"reason": cell.na_reason}))
        log(f"n/a: {cell.row} / {cell.column}: {cell.na_reason}")
        return False
    except NonFiniteError as e:  # recorded in RUN/stopped.json; the grid goes on with the next run
        log(f"stopped: {e}")
    return True


def _grid_record(kind, out_dir, config, seeds, model, overrides, cells) -> dict[str, Any]:
    return {
        "kind": kind,
        "model": model,
        "config": str(config) if config else None,
        "seeds": seeds,
        "overrides": overrides,
        "command": command_line(kind, out_dir, config, seeds, model, overrides),
        "cells": [
            {
                "row": c.row,
                "column": c.column,
                "name": c.name,
                "overrides": c.overrides,
                "na_reason": c.na_reason,
            }
            for c in cells
        ],
    }


def _computed(overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides that change what a grid's runs compute (those a run may not resume with)."""
    from avel.engine.train import RESUMABLE_CHANGES

    return {k: v for k, v in overrides.items() if k not in RESUMABLE_CHANGES}


def _write_grid(out_dir: Path, grid: dict[str, Any]) -> None:
    """Create or resume a grid directory; a directory holding a different grid is refused."""
    path = out_dir / "grid.json"
    if path.is_file():
        old = json.loads(path.read_text())
        diff = [k for k in ("kind", "model", "config") if old.get(k) != grid[k]]
        if _computed(old.get("overrides", {})) != _computed(grid["overrides"]):
            diff.append("overrides")  # a change a run may resume with (RESUMABLE_CHANGES) is not another grid
        if diff:
            changes = ", ".join(f"{k}: {old.get(k)!r} -> {grid[k]!r}" for k in diff)
            raise ValueError(
                f"{out_dir} holds a different grid ({changes}); use another directory, or the same options "
                "to resume it"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(grid, indent=2))


def _describe(grid: dict[str, Any], cells: list[Cell], out_dir: Path) -> str:
    lines = [f"{TITLES[grid['kind']]} ({grid['model']}): {len(cells)} cells × {grid['seeds']} seed(s)",
             f"  {grid['command']}"]  # fmt: skip
    for cell in cells:
        opts = " ".join(f"{k}={_cli_value(v)}" for k, v in cell.overrides.items())
        runs = f"-> {out_dir / cell.name}/seed0..{grid['seeds'] - 1}"
        where = f"n/a: {cell.na_reason}" if cell.na_reason else runs
        lines.append(f"  {cell.row:14s} {cell.column:10s} {opts:40s} {where}")
    trained = sum(not c.na_reason for c in cells) * grid["seeds"]
    lines.append(f"dry run: {trained} run(s) would be trained; nothing was written")
    return "\n".join(lines)


def _dry_table(grid: dict[str, Any], cells: list[Cell]) -> Table:
    return _table(grid, [CellSummary(cell, grid["seeds"]) for cell in cells])
