"""The ``avel`` command line: a thin typer layer, each command a few lines over a library function."""

from __future__ import annotations

import json
import os
import sys
from enum import IntEnum
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

# typer's UsageError (unknown option, missing argument, bad value), wherever this typer version keeps click
UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class Exit(IntEnum):
    """``avel``'s exit codes: one per kind of outcome, the same in every command (``exit_code``)."""

    DONE = 0
    SOME_FAILED = 1  # the command finished, but some inputs failed (each reported, the rest written)
    BAD_INPUT = 2  # a usage error, bad input data or a bad config value; nothing written
    LOCKED = 3  # the output is locked: another run is writing it
    NON_FINITE = 4  # training stopped at a non-finite loss or gradient
    INTERNAL = 70  # an internal error (a bug; sysexits' EX_SOFTWARE)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as a shell reports it)


EXIT_CODES = {
    Exit.DONE: "done",
    Exit.SOME_FAILED: "done, but some inputs failed (each reported); the others written",
    Exit.BAD_INPUT: "a usage error, bad input data or a bad config value (nothing written)",
    Exit.LOCKED: "the output is locked: another run is writing it (preprocess --wait)",
    Exit.NON_FINITE: "training stopped at a non-finite loss or gradient (last checkpoint kept)",
    Exit.INTERNAL: "an internal error (a bug): --debug shows the traceback; please report it",
    Exit.INTERRUPTED: "interrupted (Ctrl-C); a run or a grid resumes when started again",
}
EPILOG = "An error is one line on stderr, `error: FILE[:LINE]: what is wrong`. Exit codes:\n\n" + "\n".join(
    f"{int(c):>3}  {what}" for c, what in EXIT_CODES.items()
)

# Errors whose message says what is wrong with the user's input (file, option, value): one line, exit 2.
KNOWN_ERRORS = (ValueError, OSError, KeyError)
_debug = {"on": False}


def debugging() -> bool:
    """``avel --debug ...`` or ``AVEL_DEBUG=1``: errors raise with their traceback."""
    return _debug["on"] or os.environ.get("AVEL_DEBUG", "") not in ("", "0")


def error_message(e: BaseException) -> str:
    """One line: an OSError as ``FILE: what``, anything else its own message (which names its file)."""
    if isinstance(e, OSError) and e.strerror and e.filename:
        return f"{e.filename}: {e.strerror.lower()}"
    if isinstance(e, KeyError):
        return f"missing key {e}"
    return " ".join(str(e).split()) or type(e).__name__


def exit_code(e: BaseException) -> tuple[Exit, str]:
    """The one place that maps an error to its exit code and its one line (after ``error: ``)."""
    from avel.preprocessing.lock import OutputLocked

    train = sys.modules.get("avel.engine.train")  # loaded whenever training could have raised
    if isinstance(e, Interrupted | KeyboardInterrupt | typer.Abort):
        return Exit.INTERRUPTED, "interrupted"
    if isinstance(e, OutputLocked):
        return Exit.LOCKED, error_message(e)
    if train is not None and isinstance(e, train.NonFiniteError):
        return Exit.NON_FINITE, error_message(e)
    if isinstance(e, UsageError):
        return Exit.BAD_INPUT, usage_line(e)
    if isinstance(e, KNOWN_ERRORS):
        return Exit.BAD_INPUT, error_message(e)
    if type(e).__name__ == "OutOfMemoryError":  # torch's: the run's size, not a bug
        return Exit.BAD_INPUT, f"{error_message(e)} (a smaller --batch-size, --width or --frames fits)"
    why = f"unexpected {type(e).__name__}: {error_message(e)}"
    return Exit.INTERNAL, f"{why} (rerun with --debug for the traceback, and please report it)"


class Interrupted(Exception):
    """Ctrl-C inside a command (typer would turn the KeyboardInterrupt into a silent exit 130)."""


class OneLineErrors(TyperGroup):
    """``avel``'s command group and its one error path: every error a command raises (and a usage error,
    an interrupt) becomes one line ``error: ...`` on stderr and the exit code of its kind (``exit_code``);
    with ``--debug`` (or ``AVEL_DEBUG=1``) it is raised instead, with its traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError" or e.ctx is None:  # `avel` alone: the help
                return super().main(args, prog_name, complete_var, True, **extra)
            fail(e)
        except (Exception, KeyboardInterrupt, typer.Abort) as e:
            if debugging() and not isinstance(e, typer.Abort):
                raise
            fail(e)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:
            raise Interrupted("interrupted") from e


def fail(e: BaseException) -> NoReturn:
    """``error: ...`` on stderr and the exit code of the error's kind."""
    code, line = exit_code(e)
    typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
    sys.exit(int(code))


def usage_line(e: Exception) -> str:
    """``avel train: no such option: --foo (possible options: --fusion, --out); `avel train --help` lists
    the options``: the command, click's message on one line, where the options are listed."""
    command = e.ctx.command_path
    message = " ".join(e.format_message().split()).rstrip(".")
    listed = "commands" if "command" in message else "options"
    return f"{command}: {message[:1].lower()}{message[1:]}; `{command} --help` lists the {listed}"


app = typer.Typer(
    help="avel: audio-visual event localization with modality rebalancing (PMR, OGM-GE, OPM, IPRM).",
    epilog=EPILOG,
    cls=OneLineErrors,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
command = app.command


@app.callback()
def main(
    debug: bool = typer.Option(
        False, "--debug", help="show the full traceback of an error (or AVEL_DEBUG=1)"
    ),
) -> None:
    """avel: audio-visual event localization with modality rebalancing (PMR, OGM-GE, OPM, IPRM)."""
    _debug["on"] = debug


@command()
def synth(
    out_dir: Path = typer.Argument(
        ..., help="folder to write (OUT_DIR/AVE/<id>.mp4, Annotations.txt, splits)"
    ),
    layout: str = typer.Option("ave", help="ave | crema-d (wav + flv, train/test.csv) | manifest (csv)"),
    videos: int = typer.Option(280, help="number of videos (clips)"),
    seed: int = typer.Option(0, help="random seed (same seed, bit-identical files)"),
    classes: int = typer.Option(None, help="ave: the first K AVE classes (28); manifest: K classes (6)"),
    fps: float = typer.Option(None, help="video frame rate (ave 8, crema-d / manifest 30)"),
    frame_size: int = typer.Option(64, help="frame width and height in pixels"),
    sample_rate: int = typer.Option(16000, help="audio sample rate"),
    channels: int = typer.Option(1, help="audio channels (1 mono, 2 stereo)"),
    duration_jitter: float = typer.Option(0.0, help="± seconds of random clip-length jitter"),
    audio_snr_db: float = typer.Option(None, help="audio signal-to-noise ratio (dB); lower = weaker audio"),
    visual_snr: float = typer.Option(None, help="visual signal-to-clutter ratio; lower = weaker vision"),
    background_own_class: float = typer.Option(
        None, help="P(an off-screen sound / silent object in a background second is of the video's class)"
    ),
    p_audio: float = typer.Option(None, help="crema-d / manifest: P(a clip's sound is its own class)"),
    p_visual: float = typer.Option(None, help="crema-d / manifest: P(a clip's object is its own class)"),
    audio_groups: int = typer.Option(
        None,
        help="G groups of consecutive classes share one sound (audio alone tells only the group); "
        "0 = one sound per class",
    ),
    audio_else: str = typer.Option(
        None,
        help="crema-d / manifest: the sound of the other 1 - p_audio clips: other (another class's) | none",
    ),
    visual_groups: int = typer.Option(
        None, help="ave: G groups of consecutive classes share one object (vision alone tells only the group)"
    ),
    val_fraction: float = typer.Option(None, help="ave: share of each class's videos in val (0.1)"),
    test_fraction: float = typer.Option(
        None, help="ave: share of each class's videos in test (0.1); the rest trains"
    ),
) -> None:
    """Make an embedded dataset of real media files: AVE layout (mp4), CREMA-D layout (wav + flv) or a clip
    manifest (mp4 + csv). Clip layouts default to the calibrated CREMA-D-form set (--audio-snr-db 12
    --visual-snr 0.4 --p-audio 1 --p-visual 1 --audio-groups 3: visual alone above audio alone, audio
    dominating the fused model)."""
    from avel.synth.layouts import synthesise

    opts = dict(
        videos=videos,
        seed=seed,
        classes=classes,
        fps=fps,
        frame_size=frame_size,
        sample_rate=sample_rate,
        channels=channels,
        duration_jitter=duration_jitter,
        audio_snr_db=audio_snr_db,
        visual_snr=visual_snr,
        p_background_own_class=background_own_class,
        p_audio=p_audio,
        p_visual=p_visual,
        audio_groups=audio_groups,
        audio_else=audio_else,
        visual_groups=visual_groups,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
    summary = synthesise(layout, out_dir, **opts)
    typer.echo(json.dumps(summary, indent=2, default=str))


@command()
def preprocess(
    dataset_dir: Path = typer.Argument(
        ...,
        help="AVE-layout folder (AVE/<id>.mp4, Annotations.txt, *Set.txt), CREMA-D folder (AudioWAV/, "
        "VideoFlash/, train.csv, test.csv) or a clip manifest CSV (video,label,split[,start,end,audio])",
    ),
    out: Path = typer.Argument(..., help="HDF5 file to write"),
    workers: int = typer.Option(1, help="parallel decoding processes"),
    threads: int = typer.Option(
        None,
        help="parallel decoding threads in this process instead of --workers (the same file) "
        "[default: 2 with --workers 1]",
        show_default=False,
    ),
    frame_size: int = typer.Option(224, help="frames are resized and center-cropped to this size"),
    frames_per_segment: int = typer.Option(
        1, help="AVE: frames per one-second segment (1 = the middle frame)"
    ),
    audio_pad: str = typer.Option("zero", help="clips shorter than 10 s: zero (pad) or tile (PMR reference)"),
    dataset: str = typer.Option(
        None, help="clip sets: defaults of crema-d | kinetics-sounds | vggsound (frames, audio seconds)"
    ),
    frames: int = typer.Option(None, help="clip sets: frames stored per clip (crema-d 10)"),
    audio_seconds: float = typer.Option(None, help="clip sets: spectrogram window, shorter clips tiled"),
    lists: Path = typer.Option(None, help="crema-d: folder of train.csv / test.csv (default: DATASET_DIR)"),
    val_fraction: float = typer.Option(0.1, help="clip sets: share of each train class carved into val"),
    val_seed: int = typer.Option(0, help="clip sets: seed of the val draw (recorded in the file)"),
    spectrogram: str = typer.Option(
        "avel",
        help="avel (log magnitude, 16 kHz) | pmr (the released PMR code's log PSD, 22.05 kHz) | pmr16 (the "
        "same at 16 kHz: 257 x 299 for CREMA-D's 3 s, PMR §5.2)",
    ),
    progress: bool = typer.Option(True, help="show a progress bar"),
    wait: bool = typer.Option(
        False, "--wait", help="if another run is writing OUT, wait for it (default: refuse)"
    ),
    shard: str = typer.Option(
        None, help="I/N: decode only shard I (0-based) of N into OUT.parts/ (any layout; then --merge)"
    ),
    merge: bool = typer.Option(False, "--merge", help="write OUT from the shards of every --shard I/N run"),
    decoder: str = typer.Option(
        "decord",
        help="decord | torchcodec (optional extra: pip install 'avel[torchcodec]', needs FFmpeg libs)",
    ),
    decoder_device: str = typer.Option("cpu", help="torchcodec: cpu | cuda (NVDEC) video decoding"),
) -> None:
    """Decode every video (decord or torchcodec), take frames and log-spectrograms, write one HDF5 file."""
    from avel.preprocessing.decoders import Decoder
    from avel.preprocessing.layouts import PreprocessOptions, preprocess_dataset

    if shard is not None and merge:
        raise ValueError("--shard and --merge cannot be combined: run each --shard I/N, then --merge once")
    shard_at = _shard_option(shard) if shard is not None else None

    options = PreprocessOptions(
        workers=workers,
        threads=threads,
        progress=progress,
        frame_size=frame_size,
        frames_per_segment=frames_per_segment,
        audio_pad=audio_pad,
        dataset=dataset,
        frames=frames,
        audio_seconds=audio_seconds,
        lists=lists,
        val_fraction=val_fraction,
        val_seed=val_seed,
        wait=wait,
        shard=shard_at,
        merge=merge,
        spectrogram=spectrogram,
        decoder=Decoder(decoder, decoder_device),
    )
    report = preprocess_dataset(dataset_dir, out, options)
    typer.echo(report.summary())
    if report.failed:
        raise typer.Exit(Exit.SOME_FAILED)


def _launch_torchrun(nproc: int) -> int:
    """``avel train ... --nproc N``: the same command under ``torchrun --standalone`` with N processes."""
    import subprocess

    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg.startswith("--nproc="):
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        argv.append(arg)
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    return subprocess.call([*run, "-m", "avel", *argv])


def _shard_option(text: str) -> tuple[int, int]:
    """``--shard I/N`` as (I, N), or a one-line error."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit()):
        raise ValueError(f"--shard {text}: expected I/N, e.g. 0/4 (shard I, 0-based, of N)")
    return int(index), int(count)


@app.command("import-features")
def import_features(
    release_dir: Path = typer.Argument(..., help="folder of the AVE-ECCV18 release (audio_feature.h5, ...)"),
    out: Path = typer.Argument(..., help="features HDF5 file to write"),
    annotations: Path = typer.Option(None, help="Annotations.txt (default: RELEASE_DIR/Annotations.txt)"),
) -> None:
    """Convert the official AVE-ECCV18 feature release into an avel features file."""
    from avel.preprocessing.features import import_features as run

    run(release_dir, out, annotations=annotations)
    typer.echo(f"wrote {out}")


@command()
def cgmnist(
    out: Path = typer.Argument(..., help="HDF5 file to write"),
    mnist: Path = typer.Option(
        None, help="folder with the MNIST idx files (train-images-idx3-ubyte[.gz], ...); default: embedded"
    ),
    train: int = typer.Option(
        None, help="embedded: rendered train digits, val carved from them (default 60000; --small: 2000)"
    ),
    test: int = typer.Option(None, help="embedded: rendered test digits (default 10000; --small: 1000)"),
    seed: int = typer.Option(0, help="random seed: val subset, colours, rendered digits"),
    color_var: float = typer.Option(0.03, help="variance of the colour jitter per channel"),
    test_color_match: float = typer.Option(
        None,
        help="P(a test digit has its class's colour), else a random class's (default 0: independent; "
        "--small: 0.6)",
    ),
    val_fraction: float = typer.Option(0.1, help="share of train held out as val"),
    small: bool = typer.Option(
        False, "--small", help="the small embedded set of demos and tests (2000 / 1000, colour match 0.6)"
    ),
    progress: bool = typer.Option(True, help="a progress bar while rendering"),
) -> None:
    """Colored-and-gray MNIST (PMR Table 1): from MNIST idx files, or embedded (rendered digits, cached):
    60,000 train / 10,000 test digits by default, train colours biased as Kim et al., test colours not."""
    from dataclasses import replace

    from avel.synth.cgmnist import SMALL, CGMNISTConfig, make_cgmnist

    base = SMALL if small else CGMNISTConfig()
    given = {"train": train, "test": test, "test_color_match": test_color_match}
    cfg = replace(base, seed=seed, color_var=color_var, val_fraction=val_fraction)
    cfg = replace(cfg, **{k: v for k, v in given.items() if v is not None})
    rows = make_cgmnist(out, cfg, mnist_dir=mnist, progress=progress)
    typer.echo(f"wrote {out}: " + ", ".join(f"{k} {v}" for k, v in rows.items()))


@command()
def info(
    path: Path = typer.Argument(..., help="an avel HDF5 file"),
    verify: bool = typer.Option(
        False, "--verify", help="read every chunk; name the damaged rows and the rows holding NaN / Inf"
    ),
) -> None:
    """Show what is in an avel HDF5 file: videos, splits, class counts, parameters."""
    from avel.preprocessing.h5 import describe, describe_damage, nonfinite_error
    from avel.preprocessing.h5 import verify as verify_file

    if verify:
        checked, damaged, nonfinite = verify_file(path)
        if damaged:
            raise ValueError(describe_damage(path, damaged))
        if nonfinite:
            raise ValueError(
                f"{nonfinite_error(path, nonfinite)}; training refuses them: write the file again"
            )
    typer.echo(describe(path))
    if verify:
        typer.echo(checked)


@command()
def train(
    data: Path = typer.Argument(None, help="preprocess output or features file (or `data` in --config)"),
    config: Path = typer.Option(
        None, "--config", "-c", help="TOML config file, or a shipped config by name (table4_avel)"
    ),
    model: str = typer.Option(None, help="avel | resnet18 | cgmnist, or a registered family"),
    fusion: str = typer.Option(
        None, help="avel: concat | dmrn; resnet18, cgmnist: concat | sum | film | gated | mmtm | centralnet"
    ),
    modality: str = typer.Option(None, help="both | audio | visual (cgmnist: gray | colored): uni-modal"),
    balance: str = typer.Option(None, help="a rebalancing method: none, pmr, ogm-ge, ... (`avel balancers`)"),
    pmr: bool = typer.Option(False, "--pmr", help="short for --balance pmr"),
    optimizer: str = typer.Option(None, help="sgd | adam | adagrad"),
    lr: float = typer.Option(None),
    momentum: float = typer.Option(None),
    weight_decay: float = typer.Option(None),
    schedule: str = typer.Option(None, help="none | step | multistep | cosine"),
    step_size: int = typer.Option(None, help="step schedule: epochs between decays"),
    milestones: str = typer.Option(None, help="multistep schedule: comma-separated epochs"),
    batch_size: int = typer.Option(None),
    epochs: int = typer.Option(None),
    seed: int = typer.Option(None),
    device: str = typer.Option(None, help="auto | cpu | cuda"),
    amp: bool = typer.Option(None, "--amp/--no-amp", help="bf16 autocast (CUDA, or a CPU with native bf16)"),
    compile_: bool = typer.Option(
        None, "--compile/--no-compile", help="torch.compile the encoders (once per run; training steps)"
    ),
    cpu_conv_layout: str = typer.Option(
        None, help="nchw | channels_last: the training steps' CPU convolutions (after a probe of the shapes)"
    ),
    width: int = typer.Option(None, help="ResNet18 base width (64 standard; 8-16 for CPU runs)"),
    frames: int = typer.Option(None, help="resnet18: frames per clip sample"),
    pretrained: bool = typer.Option(None, "--pretrained/--no-pretrained", help="ImageNet weights (visual)"),
    out: Path = typer.Option(None, help="run directory (re-use it to resume)"),
    eval_every: int = typer.Option(
        None, help="evaluate on val at epochs 0, N, 2N, ... (as the AVEL reference) and the last"
    ),
    init: str = typer.Option(None, help="default | reference (AVE-ECCV18's Xavier-uniform layers; avel)"),
    init_from: str = typer.Option(None, help="start from the matching weights of a checkpoint (RUN/best.pt)"),
    modality_eval_every: int = typer.Option(
        None, help="each modality's prototype accuracy on val every N epochs (0: at the last epoch only)"
    ),
    pmr_alpha: float = typer.Option(None, help="PMR α (Eq. 10)"),
    pmr_mu: float = typer.Option(None, help="PMR μ (Eq. 13, PER)"),
    pmr_reg_epochs: int = typer.Option(None, help="PMR E_r: PER in the first E_r epochs"),
    pmr_window: str = typer.Option(None, help="PMR active epochs START,END"),
    pmr_subset: str = typer.Option(
        None,
        help="prototype subset: fraction of train (0.1), 'val', or 'test' (--set protocol=released only)",
    ),
    pmr_momentum: float = typer.Option(None, help="prototype momentum ε (Eq. 12)"),
    pmr_coef: str = typer.Option(None, help="paper (Eq. 11) | step (released code)"),
    set_: list[str] = typer.Option(
        None,
        "--set",
        help="any config key: --set lr=1e-3, a balancer's option --set ogm_alpha=0.3 (`avel balancers`)",
    ),
    progress: bool = typer.Option(None, "--progress/--no-progress"),
    tensorboard: bool = typer.Option(
        None, "--tensorboard/--no-tensorboard", help="TensorBoard event files in the run directory (rank 0)"
    ),
    sync_bn: bool = typer.Option(
        None, "--sync-bn/--no-sync-bn", help="under torchrun: BatchNorm statistics over all processes"
    ),
    nproc: int = typer.Option(
        None, help="train with N processes on this machine (torchrun --standalone --nproc-per-node N)"
    ),
) -> None:
    """Train an AVEL localizer or a ResNet18 classifier, with a rebalancing method."""
    options = dict(locals())  # the command's options, before anything else is bound
    from avel.engine.config import load_config, validate

    cfg = load_config(config, train_overrides(options))
    if nproc is not None and nproc > 1 and "LOCAL_RANK" not in os.environ:
        validate(cfg)  # a bad value is refused here (exit 2), not once per process under torchrun
        raise typer.Exit(_launch_torchrun(nproc))
    from avel.engine.train import run_training

    run_training(cfg)


def train_overrides(options: dict[str, Any]) -> dict[str, Any]:
    """``avel train``'s options as config overrides: each option given under its key, ``--pmr`` as
    ``balance = "pmr"``, then each ``--set KEY=VALUE`` (the last word)."""
    skip = {"config", "pmr", "set_", "nproc"}
    given = {k.removesuffix("_"): v for k, v in options.items() if k not in skip and v is not None}
    overrides = {k: str(v) if isinstance(v, Path) else v for k, v in given.items()}
    if options["pmr"]:
        if options["balance"] not in (None, "pmr"):
            both = f"--pmr and --balance {options['balance']} cannot be combined"
            raise ValueError(f"{both}: choose one rebalancing method")
        overrides["balance"] = "pmr"
    return overrides | set_values(options["set_"])


def set_values(items: list[str] | None) -> dict[str, str]:
    """``--set KEY=VALUE`` items as a dict (a later item wins); an item without ``=`` is refused."""
    values = {}
    for item in items or []:
        key, equals, value = item.partition("=")
        if not (equals and key.strip()):
            raise ValueError(f"--set {item}: expected KEY=VALUE, e.g. --set lr=1e-3")
        values[key.strip()] = value
    return values


@command()
def evaluate(
    checkpoint: Path = typer.Argument(..., help="best.pt / last.pt of a run"),
    data: Path = typer.Argument(..., help="the HDF5 file to evaluate on"),
    split: str = typer.Option("test", help="train | val | test"),
    out: Path = typer.Option(None, help="folder for eval.json and confusion.png (default: the run dir)"),
    device: str = typer.Option("auto"),
) -> None:
    """Segment-level accuracy (AVE protocol), per class, background/event, detection F1, each modality."""
    from avel.tools.evaluate import evaluate_checkpoint

    text = evaluate_checkpoint(checkpoint, data, split=split, out_dir=out, device=device)
    typer.echo(text)


@command()
def predict(
    checkpoint: Path = typer.Argument(..., help="an end-to-end AVEL checkpoint"),
    videos: list[Path] = typer.Argument(
        ..., help="video files (any length >= 1 s), folders of videos, or .txt lists of videos"
    ),
    json_out: Path = typer.Option(None, "--json", help="one video: also write its predictions as JSON here"),
    plot: Path = typer.Option(
        None, help="one video: its timeline PNG (default: beside --json, else ./<video name>.timeline.png)"
    ),
    no_plot: bool = typer.Option(False, "--no-plot", help="draw no timeline"),
    out: Path = typer.Option(
        None,
        help="several videos (or a folder): OUT/<name>.json + OUT/<name>.png per video and one table, "
        "OUT/predictions.csv + .json (default: predictions/)",
    ),
    annotations: Path = typer.Option(
        None,
        help="a preprocessed file (avel preprocess) or an AVE Annotations.txt: the annotated spans of the "
        "videos it names (by file name)",
    ),
    data: Path = typer.Option(
        None,
        help="a preprocessed file whose train split gives each modality's prototypes, for what each "
        "modality alone says (default: --annotations when it is one; else a PMR checkpoint's own)",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="several videos: a progress bar"),
    device: str = typer.Option("cpu"),
) -> None:
    """Per-second event labels for your own videos, printed as time ranges, with a timeline picture: fused
    probabilities, what each modality alone says, the predicted (and annotated) spans."""
    from avel.tools.predict import find_videos, load_predictor

    found = find_videos(videos)
    one = len(found) == 1 and out is None and not any(v.is_dir() for v in videos)
    if not one and (json_out is not None or plot is not None):
        raise ValueError("--json and --plot name one video's files; for several videos use --out DIR")
    predictor = load_predictor(checkpoint, device=device, annotations=annotations, data=data)
    if one:
        default_png = json_out.with_suffix(".png") if json_out else Path(f"{found[0].stem}.timeline.png")
        _predict_one(predictor, found[0], json_out, None if no_plot else plot or default_png)
    elif _predict_many(predictor, found, out or Path("predictions"), plot=not no_plot, progress=progress):
        raise typer.Exit(Exit.SOME_FAILED)


def _predict_one(predictor: Any, video: Path, json_out: Path | None, png: Path | None) -> None:
    """One video: its time ranges on stdout, its JSON (``--json``) and its timeline picture."""
    from avel.tools.predict import format_ranges
    from avel.tools.timeline import save_timeline

    result = predictor.predict(video)
    typer.echo(format_ranges(result["ranges"]))
    if json_out:
        json_out.write_text(json.dumps(result, indent=1))
    if png is not None:
        save_timeline(result, png)
        typer.echo(f"timeline: {png}", err=True)


def _predict_many(predictor: Any, videos: list[Path], out: Path, plot: bool, progress: bool) -> list:
    """Several videos: a JSON and a timeline each and one table under ``out``, one summary line per video;
    returns the videos that failed (each named on stderr as it fails)."""
    from avel.tools.predict import predict_videos

    results, failed = predict_videos(
        predictor, videos, out, plot=plot, progress=progress,
        on_error=lambda v, why: typer.secho(f"error: {v}: {why}", fg=typer.colors.RED, err=True),
    )  # fmt: skip
    for res in results:
        spans = [
            f"{r['start']}-{r['end']}s {r['label']}" for r in res["ranges"] if r["label"] != "background"
        ]
        typer.echo(f"{Path(res['video']).name}: {', '.join(spans) or 'no event'}")
    typer.echo(f"wrote {len(results)} timelines and predictions.csv / predictions.json to {out}")
    return failed


@command()
def extract(
    checkpoint: Path = typer.Argument(..., help="an end-to-end AVEL checkpoint"),
    data: Path = typer.Argument(..., help="the preprocess HDF5 file"),
    out: Path = typer.Argument(..., help="features HDF5 file to write"),
    device: str = typer.Option("auto"),
    visual_from: Path = typer.Option(
        None, help="visual maps from this checkpoint (e.g. a visual-only model), audio from CHECKPOINT"
    ),
) -> None:
    """Write a features file (per-segment audio vectors, visual maps) from a trained end-to-end model."""
    from avel.tools.extract import extract_features

    extract_features(checkpoint, data, out, device=device, visual_checkpoint=visual_from)
    typer.echo(f"wrote {out}")


@command()
def plot(
    run_dirs: list[Path] = typer.Argument(
        ..., help="one or more run directories (e.g. with and without PMR)"
    ),
    out: Path = typer.Option("plot.png", help="PNG file to write"),
    every_key: bool = typer.Option(False, "--all", help="every logged per-epoch key as its own panel"),
) -> None:
    """PMR's Fig. 4: fused accuracy, each modality's accuracy and the imbalance ratio ρ over epochs, runs
    overlaid (e.g. naive vs PMR); --all: every logged key."""
    from avel.tools.plot import plot_runs

    keys = plot_runs(run_dirs, out, every_key=every_key)
    typer.echo(f"wrote {out} ({', '.join(keys)})")


ablate_app = typer.Typer(
    help="The PMR paper's experiment grids (Tables 1, 2, 3, 5, 6) as tables; resumable.", no_args_is_help=True
)
app.add_typer(ablate_app, name="ablate")


def _ablate(kind: str):
    def command(
        out_dir: Path = typer.Argument(..., help="grid directory (re-use it to resume)"),
        data: Path = typer.Option(None, help="preprocess output or features file (or `data` in --config)"),
        config: Path = typer.Option(
            None, "--config", "-c", help="TOML config file, or a shipped one by name (table6_optimizers)"
        ),
        model: str = typer.Option(
            None, help="a model family: avel | resnet18 | cgmnist | ... (default: the config's)"
        ),
        seeds: int = typer.Option(3, help="seeds 0..N-1 per cell"),
        set_: list[str] = typer.Option(None, "--set", help="any config key for every run: --set epochs=20"),
        rows: list[str] = typer.Option(None, "--row", help="train only this row (repeatable)"),
        columns: list[str] = typer.Option(None, "--column", help="train only this column (repeatable)"),
        dry_run: bool = typer.Option(False, "--dry-run", help="print the grid, train nothing"),
        progress: bool = typer.Option(
            None, "--progress/--no-progress", help="each run's progress bar (default: the config's)"
        ),
    ) -> None:
        from avel.experiments.ablate import run_grid

        overrides = set_values(set_)
        if data is not None:
            overrides["data"] = str(data)
        table = run_grid(
            kind, out_dir, config=config, seeds=seeds, model=model, overrides=overrides, dry_run=dry_run,
            rows=rows or None, columns=columns or None, log=typer.echo, progress=progress,
        )  # fmt: skip
        typer.echo(table.markdown())

    command.__doc__ = {
        "optimizers": "SGD / AdaGrad / Adam, without and with PMR (PMR Table 6).",
        "fusions": "concat / sum / FiLM / gated (or AVEL concat / DMRN) ± PMR, and uni-modal rows (Table 1).",
        "subset": "PMR with prototypes from 1/5/10/50/100% of train (Table 5).",
        "balancers": "naive / dropout / G-Blend / OGM-GE / OPM / IPRM / PMR w/o PER / PMR (Table 2), and "
        "BalanceBenchmark's MMCosine / UMT (teachers: the grid's uni-modal rows) / UME / MBSD / CML / "
        "MMPareto / LFM; table.md and table.csv add BalanceBenchmark's measures.",
        "intermediate": "MMTM / CentralNet inside the ResNet18 pair, without and with PMR (Table 3).",
    }[kind]
    return command


for _kind in ("optimizers", "fusions", "subset", "balancers", "intermediate"):
    ablate_app.command(_kind)(_ablate(_kind))


@ablate_app.command("table")
def ablate_table(
    out_dir: Path = typer.Argument(..., help="a grid directory"),
    plot: bool = typer.Option(
        False, "--plot", help="also draw the table: mean ± std bars, seeds as points, the paper's markers"
    ),
    png: Path = typer.Option(None, help="where --plot writes its PNG (default: DIR/table.png)"),
) -> None:
    """Re-tabulate a grid directory (table.md, table.csv) from its finished runs; --plot draws it."""
    from avel.experiments.ablate import write_tables

    table = write_tables(out_dir)
    typer.echo(table.markdown())
    if plot or png is not None:
        from avel.tools.grid_figure import save_table_figure

        typer.echo(f"wrote {save_table_figure(table, png or out_dir / 'table.png')}")


@ablate_app.command("list")
def ablate_list(out_dir: Path = typer.Argument(..., help="a grid directory")) -> None:
    """Each cell and seed of a grid and its state: done / partial / not started / n/a."""
    from avel.experiments.ablate import list_grid

    typer.echo(list_grid(out_dir))


@command()
def demo(
    workdir: Path = typer.Option(Path("data/demo"), help="where the demo writes its data and run"),
    videos: int = typer.Option(800, help="videos in the embedded set (the default set's 800)"),
    classes: int = typer.Option(10, help="the first K AVE classes"),
    epochs: int = typer.Option(30, help="AVEL's epochs on the features"),
    seed: int = typer.Option(0, help="the whole pipeline's seed (set, encoders, AVEL)"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bars"),
) -> None:
    """Default set -> preprocess -> summary -> audio and visual encoders -> AVEL concat on their features
    without and with PMR -> the fused accuracy and each modality's beside the always-background floor, in
    minutes on a CPU (seed s = seed s of the calibration in docs/results.md)."""
    from avel.tools.demo import run_demo

    run_demo(workdir, videos=videos, classes=classes, epochs=epochs, seed=seed, progress=progress)


@command()
def balancers() -> None:
    """Each rebalancing method (--balance NAME) and its options: [table] option = default, its flat key
    (--set pmr_alpha=1), what it does and its allowed values."""
    from avel.balance import describe_balancers

    typer.echo(describe_balancers())


@app.command("demo-cgmnist")
def demo_cgmnist(
    workdir: Path = typer.Option(Path("data/demo-cgmnist"), help="where the demo writes its data and runs"),
    epochs: int = typer.Option(6, help="training epochs of each run"),
    train: int = typer.Option(1500, help="rendered train digits"),
    test: int = typer.Option(500, help="rendered test digits"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bars"),
) -> None:
    """CG-MNIST's modality imbalance and what PMR does: naive vs PMR concat, per-modality accuracy, ρ plot."""
    from avel.tools.demo import run_cgmnist_demo

    run_cgmnist_demo(workdir, epochs=epochs, train=train, test=test, progress=progress)


if __name__ == "__main__":  # pragma: no cover
    app()
