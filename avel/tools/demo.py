"""``avel demo``: the whole pipeline on the embedded set, sized for a CPU in a few minutes.

make the embedded AVE-format set -> preprocess to HDF5 -> summary -> train AVEL concat end to end (narrow
ResNet18 encoders), without and with PMR -> test accuracy of each, each modality's accuracy inside the fused
model (its prototype classifier) and the always-background floor, side by side.
"""

from __future__ import annotations

from pathlib import Path

DEMO_FRAME_SIZE = 32  # pixels: small enough for a 2-core CPU
DEMO_RUNS = (("none", "AVEL concat"), ("pmr", "concat + PMR"))


def run_demo(
    workdir: Path,
    videos: int = 400,
    classes: int = 10,
    epochs: int = 6,
    seed: int = 0,
    width: int = 8,
    progress: bool = True,
) -> dict[str, dict]:
    """``avel demo``: the default embedded set, AVEL concat end to end with ``configs/embedded_avel.toml``'s
    recipe for ``epochs`` epochs, naive and with PMR; returns each run's results by balancer."""
    from avel.engine.config import load_config
    from avel.engine.train import run_training
    from avel.preprocessing.h5 import describe
    from avel.preprocessing.pipeline import preprocess
    from avel.synth.ave import SynthConfig, synth_dataset

    workdir = Path(workdir)
    dataset = workdir / "ave-synth"
    h5 = workdir / "ave-synth.h5"
    if not (dataset / "Annotations.txt").exists():
        print(f"[1/5] making {videos} videos of {classes} AVE classes in {dataset}")
        cfg = SynthConfig(videos=videos, classes=classes, seed=seed, frame_size=DEMO_FRAME_SIZE, fps=4.0)
        synth_dataset(dataset, cfg)
    if not h5.exists():
        print(f"[2/5] preprocessing {dataset} -> {h5}")
        report = preprocess(dataset, h5, workers=2, frame_size=DEMO_FRAME_SIZE, progress=progress)
        print(report.summary())
    print("[3/5] what is in the file")
    print(describe(h5))
    results: dict[str, dict] = {}
    for balance, name in DEMO_RUNS:
        print(f"[4/5] training {name} end to end for {epochs} epochs")
        run_dir = workdir / f"run-avel-concat-{balance}-s{seed}"
        overrides = {"data": str(h5), "balance": balance, "epochs": epochs, "width": width, "seed": seed}
        overrides |= {"pmr_window": [0, epochs], "out": str(run_dir), "device": "cpu", "progress": progress}
        results[balance] = run_training(load_config("embedded_avel", overrides))
    print("[5/5] test segment accuracy (selected on val); each modality = its prototype classifier")
    print(demo_table(results))
    return results


def demo_table(results: dict[str, dict]) -> str:
    """The fused accuracy and each modality's beside the always-background floor, one line per run."""
    floor = 100 * next(iter(results.values()))["test_always_background"]
    lines = [f"{'':<14}{'fused':>8}{'audio':>8}{'visual':>8}{'always-background':>19}"]
    for balance, name in DEMO_RUNS:
        res = results[balance]
        accs = [res["test_accuracy"], res["test_audio_accuracy"], res["test_visual_accuracy"]]
        lines.append(f"{name:<14}" + "".join(f"{100 * a:7.1f}%" for a in accs) + f"{floor:18.1f}%")
    return "\n".join(lines)


def run_cgmnist_demo(
    workdir: Path, epochs: int = 6, train: int = 1500, test: int = 500, seed: int = 0, progress: bool = True
) -> dict[str, dict]:
    """``avel demo-cgmnist``: the modality imbalance of CG-MNIST and what PMR does about it, on a CPU.

    embedded CG-MNIST -> naive concat and concat + PMR (configs/cgmnist.toml's recipe) -> test accuracy of
    each, each modality's prototype accuracy, and PMR Fig. 4 (accuracies and ρ over epochs) as a PNG.
    """
    from avel.engine.config import load_config
    from avel.engine.train import run_training
    from avel.preprocessing.h5 import describe
    from avel.synth.cgmnist import make_cgmnist, small
    from avel.tools.plot import plot_runs

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    h5 = workdir / f"cgmnist-{train}-{test}-s{seed}.h5"
    if not h5.exists():
        print(f"[1/4] rendering {train} train and {test} test CG-MNIST digits -> {h5}")
        make_cgmnist(h5, small(train=train, test=test, seed=seed))
    print(describe(h5))
    results: dict[str, dict] = {}
    for step, balance in ((2, "none"), (3, "pmr")):
        print(f"[{step}/4] concat fusion, balance {balance}, {epochs} epochs")
        overrides = {"data": str(h5), "balance": balance, "epochs": epochs, "seed": seed, "device": "cpu"}
        overrides["progress"] = progress
        overrides.update(out=str(workdir / f"concat-{balance}-s{seed}"), step_size=max(1, int(0.7 * epochs)))
        cfg = load_config("cgmnist", overrides)
        results[balance] = run_training(cfg)
    png = workdir / "pmr-fig4-cgmnist.png"
    plot_runs([workdir / f"concat-{b}-s{seed}" for b in ("none", "pmr")], png)
    print("[4/4] test accuracy (selected on val); each modality alone = its prototype classifier")
    print(f"{'':<14}{'fused':>8}{'gray':>8}{'colored':>9}")
    for balance, res in results.items():
        name = "naive concat" if balance == "none" else "concat + PMR"
        print(
            f"{name:<14}{100 * res['test_accuracy']:7.1f}%{100 * res['test_audio_accuracy']:7.1f}%"
            f"{100 * res['test_visual_accuracy']:8.1f}%"
        )
    print(f"ρ and the accuracies over epochs: {png}")
    return results
