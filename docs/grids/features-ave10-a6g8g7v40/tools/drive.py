"""Whole-pipeline seeds (issue 25): per seed s the SET (avel synth --seed s), both uni-modal encoders, the
features file and AVEL's cells on it all follow s. Resumable: every finished step is skipped.
usage: drive.py NAME VISUAL_SNR SEEDS [A_EPOCHS V_EPOCHS VIDEOS TEST_FRACTION CELLS]"""

import json
import os
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from avel.engine.config import load_config
from avel.engine.train import run_training
from avel.experiments.ablate import _train, build_grid
from avel.preprocessing.pipeline import preprocess
from avel.synth.ave import SynthConfig, synth_dataset
from avel.tools.extract import extract_features

name, vsnr, seeds = sys.argv[1], float(sys.argv[2]), [int(s) for s in sys.argv[3].split(",")]
a_ep, v_ep, videos, test_frac = (int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]))
cells = sys.argv[8].split(",") if len(sys.argv) > 8 else ["audio-only", "visual-only", "concat", "dmrn"]
root = Path("/work/grids/w25c")
ENC = Path("/work/wt-w25c/avel/configs/embedded_encoder.toml")
FEAT = Path("/work/wt-w25c/avel/configs/embedded_features.toml")
t0 = time.time()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.time() - t0:.0f}s] {msg}", flush=True)


for seed in seeds:
    folder = root / f"{name}-s{seed}"
    h5 = folder.with_suffix(".h5")
    if not h5.exists():
        cfg = SynthConfig(
            videos=videos,
            classes=10,
            frame_size=32,
            fps=4.0,
            seed=seed,
            audio_snr_db=-6.0,
            visual_snr=vsnr,
            audio_groups=8,
            visual_groups=int(os.environ.get("VGROUPS", "0")),
            val_fraction=0.1,
            test_fraction=test_frac,
            workers=1,
        )
        if not (folder / "Annotations.txt").exists():
            log(f"synth {folder}: {json.dumps(synth_dataset(folder, cfg)['splits'])}")
        rep = preprocess(folder, h5, workers=1, frame_size=32, progress=False)
        assert not rep.failed, rep.summary()
        log(f"preprocessed {h5}")
    audio_from = os.environ.get("AUDIO_FROM")  # a set of the same seed whose audio is this one's
    mine = root / f"{name}-s{seed}-audio"
    if audio_from and not mine.exists() and (root / f"{audio_from}-s{seed}.h5").exists():
        with h5py.File(h5) as a, h5py.File(root / f"{audio_from}-s{seed}.h5") as b:
            n = len(a["spectrogram"])
            same = (
                n == len(b["spectrogram"])
                and all(
                    np.array_equal(a["spectrogram"][i : i + 100], b["spectrogram"][i : i + 100])
                    for i in range(0, n, 100)
                )
                and np.array_equal(a["splits/test"][:], b["splits/test"][:])
            )
        log(f"audio of {name} s{seed} equals {audio_from}'s: {same}")
        if same:
            mine.symlink_to(root / f"{audio_from}-s{seed}-audio")
    ck = {}
    for modality, epochs in (("audio", a_ep), ("visual", v_ep)):
        out = root / f"{name}-s{seed}-{modality}"
        if not (out / "results.json").exists():
            run = {
                "data": str(h5),
                "modality": modality,
                "out": str(out),
                "progress": False,
                "seed": seed,
                "epochs": epochs,
            }
            if modality == "audio" and os.environ.get("AUDIO_POOL"):
                run["audio_pool"] = os.environ["AUDIO_POOL"]
            run_training(load_config(ENC, run))
        r = json.loads((out / "results.json").read_text())
        log(f"{modality} encoder s{seed}: test {100 * r['test_accuracy']:.1f} (best epoch {r['best_epoch']})")
        ck[modality] = out / "best.pt"
    pair = root / f"{name}-s{seed}-pair.h5"
    if not pair.exists():
        extract_features(ck["audio"], h5, pair, visual_checkpoint=ck["visual"])
        log(f"extracted {pair}")
    grid = root / "runs" / name
    for cell in build_grid("fusions", "avel"):
        if (
            cell.na_reason
            or cell.name.split("__")[0] not in cells
            or not cell.name.endswith("baseline")
            and "pmr" not in cells
        ):
            continue
        run_dir = grid / cell.name / f"seed{seed}"
        if not (run_dir / "results.json").is_file():
            cfg = load_config(FEAT, {"data": str(pair), "model": "avel", **cell.overrides})
            _train(cfg, seed, run_dir, cell, lambda m: None)
        r = json.loads((run_dir / "results.json").read_text())
        log(f"{cell.name} s{seed}: test {100 * r['test_accuracy']:.1f}")
log("done")
