"""Training on several processes (``avel.engine.distributed``): two gloo ranks on the CPU, spawned as real
processes.

Tolerance: losses and parameters of 2 ranks × B/2 agree with 1 process × B to 1e-5 (absolute; float32
sums in another order), prototypes to 1e-5; both ranks' prototypes are bit-identical.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avel.balance import build_balancer
from avel.balance.base import output_loss
from avel.balance.cml import confidence_penalty
from avel.balance.iprm import IPRMModel, probe
from avel.balance.ogm import modality_scores
from avel.balance.pmr import PMR, imbalance_ratio
from avel.engine import distributed
from avel.engine.config import TrainConfig
from avel.engine.train import _build_args, model_kwargs, seed_everything
from avel.families import build_model, load_splits
from avel.models.base import event_weights

# The full suite only: processes, grids, kills and CLI round trips (the fast tier: -m 'not slow').
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
B = 8  # the global batch
WORKER = (
    "import os, sys; sys.path.insert(0, 'tests'); import torch; from test_distributed import one_step; "
    "torch.save(one_step(sys.argv[1]), sys.argv[2].format(os.environ['RANK']))"
)


def one_step(data_path: str) -> dict:
    """One SGD step of AVEL on rows 0..B-1 of train, this rank taking its contiguous share; PMR's prototypes
    over this rank's shard and ρ over its share of the batch. Run alone, or under torchrun's environment."""
    torch.set_num_threads(1)
    ctx, _ = distributed.init("cpu")
    data = load_splits(data_path, device="cpu")
    cfg = TrainConfig(data=data_path, width=8)
    seed_everything(0)
    model = build_model(**_build_args(model_kwargs(cfg, data)))
    ddp = distributed.wrap(model, ctx, balancer="none", find_unused=False, sync_bn=False)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.5)
    share = B // ctx.world
    batch = data.train.batch(torch.arange(ctx.rank * share, (ctx.rank + 1) * share))
    out = ddp(batch.audio, batch.visual)
    loss = output_loss(out, batch.labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    # the same step without DDP (OPM, IPRM, G-Blend, dropout): gradients averaged by sync_gradients
    seed_everything(0)
    plain = distributed.wrap(
        build_model(**_build_args(model_kwargs(cfg, data))),
        ctx,
        balancer="opm",
        find_unused=False,
        sync_bn=False,
    )
    assert not isinstance(plain, distributed.DDP)
    out = plain(batch.audio, batch.visual)
    scores = modality_scores(out, batch.labels, plain.background, "OGM-GE")  # summed over the ranks
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.5)
    optimizer.zero_grad()
    output_loss(out, batch.labels).backward()
    distributed.sync_gradients(plain)
    optimizer.step()
    seed_everything(0)  # IPRM's probe (D^a, D^v, ω^a) on the global batch: the same λ on every rank
    iprm = IPRMModel(build_model(**_build_args(model_kwargs(cfg, data))))
    with torch.no_grad():
        z_a, z_v = iprm.encode(batch.audio, batch.visual)
    omega = float(probe(iprm, z_a, z_v, event_weights(batch.labels, iprm.background))["omega_audio"])
    # CML (confidence sum of the global batch) and MMPareto (g_mm, g_u of the global batch): one step each,
    # gradients averaged as the loop does, the same parameters as one process
    stepped = {}
    for name in ("cml", "mmpareto"):
        seed_everything(0)
        balancer = build_balancer(name)
        net = balancer.prepare_model(build_model(**_build_args(model_kwargs(cfg, data))))
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        res = balancer.training_loss(net, batch)
        opt.zero_grad()
        res.loss.backward()
        distributed.sync_gradients(net)
        balancer.before_optimizer_step(net, res)
        opt.step()
        stepped[name] = {k: v.clone() for k, v in net.state_dict().items()}
    # CML's hinge on the global batch's confidence sum: rows whose rank-local sums have the other sign
    full, rows = (
        torch.tensor([0.5, 0.5, 0.9, 0.9]),
        slice(ctx.rank * 4 // ctx.world, (ctx.rank + 1) * 4 // ctx.world),
    )
    hinge = {}
    for case, removed in (("negative", [0.8, 0.6, 0.4, 0.5]), ("positive", [0.8, 0.6, 0.9, 0.8])):
        r = torch.tensor(removed)[rows].requires_grad_()
        value = confidence_penalty(full[rows], r, "batch")
        value.backward()
        hinge[case] = (float(value.detach()), (r.grad / ctx.world).tolist())  # averaged by the loop
    if ctx.active:  # PMR over this rank's shard of train (n even: the shards cover train once)
        data.train = distributed.shard_split(
            data.train, distributed.shard_rows(len(data.train), ctx.rank, ctx.world, 0)
        )
    pmr = PMR(subset=1.0)
    pmr.on_epoch_start(model, data, 0)
    with torch.no_grad():
        out = model(batch.audio, batch.visual)
        labels = batch.labels.reshape(-1)
        w = (labels != model.background).float()
        p_a = torch.softmax(
            -torch.cdist(out.z_audio.reshape(-1, out.z_audio.shape[-1]), pmr.prototypes[0]), -1
        )
        p_v = torch.softmax(
            -torch.cdist(out.z_visual.reshape(-1, out.z_visual.shape[-1]), pmr.prototypes[1]), -1
        )
        rho = imbalance_ratio(p_a, p_v, labels, w)
    result = {
        "loss": float(distributed.all_reduce_sum(loss.detach()) / ctx.world),
        "params": {k: v.clone() for k, v in model.state_dict().items()},
        "prototypes": pmr.prototypes,
        "counts": pmr.counts,
        "rho": float(rho),
        "params_synced": {k: v.clone() for k, v in plain.state_dict().items()},
        "ogm_scores": [float(x) for x in scores],
        "iprm_omega": omega,
        "stepped": stepped,
        "hinge": hinge,
    }
    distributed.close()
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], world: int, tmp_path: Path, timeout: float = 120) -> None:
    """``world`` ranks of ``python args...`` with torchrun's environment (gloo over localhost)."""
    wait(start(args, world, tmp_path), tmp_path, timeout)


def start(args: list[str], world: int, tmp_path: Path) -> list[subprocess.Popen]:
    port = str(free_port())
    procs = []
    for rank in range(world):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "OMP_NUM_THREADS": "1",
        }
        log = (tmp_path / f"rank{rank}.log").open("w")
        procs.append(subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=log, stderr=log))
    return procs


def wait(procs: list[subprocess.Popen], tmp_path: Path, timeout: float = 120) -> None:
    world = len(procs)
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    logs = "\n".join((tmp_path / f"rank{r}.log").read_text() for r in range(world))
    assert codes == [0] * world, logs


@pytest.fixture(scope="module")
def toy_even(tmp_path_factory) -> Path:
    from conftest import write_toy_features

    path = tmp_path_factory.mktemp("dist") / "toy.h5"
    write_toy_features(path, videos=40)
    train = load_splits(path, device="cpu").train
    assert len(train) % 2 == 0 and len(train) >= B
    return path


def test_two_ranks_match_one_process(toy_even, tmp_path):
    """2 ranks × B/2 = 1 process × B: the loss, the parameters after one SGD step (DDP averages the
    gradients; CML's and MMPareto's steps average them in the loop), PMR's prototypes (sums and counts
    reduced over the shards, Eq. 6) and ρ (Eq. 8)."""
    procs = start(["-c", WORKER, str(toy_even), str(tmp_path / "r{}.pt")], 2, tmp_path)
    one = one_step(str(toy_even))  # one process, while the ranks start
    wait(procs, tmp_path)
    r0, r1 = (torch.load(tmp_path / f"r{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["loss"] == pytest.approx(one["loss"], abs=1e-5)
    before = build_model(
        **_build_args(model_kwargs(TrainConfig(width=8), load_splits(toy_even)))
    ).state_dict()
    moved = 0
    for k, v in one["params"].items():
        torch.testing.assert_close(r0["params"][k], v, atol=1e-5, rtol=0)
        assert torch.equal(r0["params"][k], r1["params"][k]), k  # the ranks stay identical
        moved += int(not torch.equal(v, before[k])) if v.is_floating_point() else 0
    assert moved > 0  # the step changed the parameters
    for k, v in one["params"].items():  # the same step, gradients averaged without DDP
        torch.testing.assert_close(r0["params_synced"][k], v, atol=1e-5, rtol=0)
        assert torch.equal(r0["params_synced"][k], r1["params_synced"][k]), k
    assert r0["ogm_scores"] == r1["ogm_scores"]  # OGM-GE / OPM scores of the global batch
    assert r0["ogm_scores"] == pytest.approx(one["ogm_scores"], abs=1e-5)
    for name, params in one["stepped"].items():  # CML, MMPareto: the global batch's sums and gradients
        for k, v in params.items():
            torch.testing.assert_close(r0["stepped"][name][k], v, atol=1e-5, rtol=0)
            assert torch.equal(r0["stepped"][name][k], r1["stepped"][name][k]), (name, k)
    for case, (value, grads) in one["hinge"].items():  # Σ −0.5: no penalty; Σ +0.3: gradient 1 per row
        assert r0["hinge"][case][0] == pytest.approx(value) and r1["hinge"][case][0] == pytest.approx(value)
        assert r0["hinge"][case][1] + r1["hinge"][case][1] == pytest.approx(grads)
    assert one["hinge"]["negative"][1] == [0.0] * 4 and one["hinge"]["positive"][1] == [1.0] * 4
    assert r0["iprm_omega"] == r1["iprm_omega"]
    assert r0["iprm_omega"] == pytest.approx(one["iprm_omega"], abs=1e-5)
    for c0, c1, c in zip(r0["prototypes"], r1["prototypes"], one["prototypes"], strict=True):
        assert torch.equal(c0, c1)  # Eq. 6: the same prototypes on every rank
        torch.testing.assert_close(c0, c, atol=1e-5, rtol=0)  # ... and those of the whole train split
    assert torch.equal(r0["counts"], one["counts"])
    assert r0["rho"] == r1["rho"]  # Eq. 8 on the global batch, not a rank's half
    assert r0["rho"] == pytest.approx(one["rho"], abs=1e-5)


def test_shard_rows_cover_train_with_equal_counts():
    shards = [distributed.shard_rows(11, r, 3, seed=5) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]  # 11 rows padded to 12: the same step count on each rank
    assert set(torch.cat(shards).tolist()) == set(range(11))
    assert torch.equal(shards[1], distributed.shard_rows(11, 1, 3, seed=5))  # from the seed alone
    g1, g2 = distributed.epoch_generator(0, 3, 1), distributed.epoch_generator(0, 3, 1)
    assert torch.equal(torch.randperm(9, generator=g1), torch.randperm(9, generator=g2))
    g3 = distributed.epoch_generator(0, 4, 1)
    assert not torch.equal(torch.randperm(50, generator=g3), torch.randperm(50, generator=g2))


def test_torchrun_pmr_run_writes_once(toy_even, tmp_path):
    """``avel train --pmr --nproc 2`` (torchrun itself, 2 gloo ranks): one metrics line per epoch,
    results.json by rank 0, and the test accuracy that evaluating best.pt in one process gives."""
    out = tmp_path / "run"
    args = [
        "-m",
        "avel",
        "train",
        str(toy_even),
        "--pmr",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--nproc",
        "2",
    ]
    args += ["--no-progress", "--device", "cpu", "--width", "8", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [ln["epoch"] for ln in lines] == [0, 1]
    assert "rho" in lines[0]
    results = json.loads((out / "results.json").read_text())
    from avel.engine.checkpoint import model_from_checkpoint
    from avel.engine.evaluate import evaluate

    model, _ = model_from_checkpoint(out / "best.pt", "cpu")
    test = evaluate(model, load_splits(toy_even).test)
    assert results["test_accuracy"] == pytest.approx(test["accuracy"], abs=1e-9)
    ckpt = torch.load(out / "last.pt", weights_only=False)
    assert ckpt["balancer"]["prototypes"] is not None
    assert (run.stdout + run.stderr).count("test accuracy") == 1  # rank 0 alone prints
