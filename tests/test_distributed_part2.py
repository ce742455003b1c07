"""AGM, AMCo, MLA, ReLearning and ReconBoost under two gloo processes equal one process (issue 28): their
batch statistics (AGM's mono-modal scores, AMCo's softmax masses, MLA's feature mean r) are summed over the
ranks; ReLearning clusters the features of every rank's rows. Greedy (on a CG-MNIST MMTM model, whose
BatchNorm normalises each rank's half batch) is checked for the ranks' exact agreement only.

Each rank trains two batches of its contiguous share of train rows 0..7 through ``train_one_epoch``; one
process trains the same global batches (rows 0, 1, 4, 5, then 2, 3, 6, 7). Parameters agree to 1e-5
(float32 sums in another order); both ranks' parameters are bit-identical.
"""

from __future__ import annotations

import pytest
import torch
from test_distributed import start, wait

from avel.balance import build_balancer
from avel.data.splits import DataSplits
from avel.engine import distributed
from avel.engine.config import TrainConfig
from avel.engine.train import _build_args, model_kwargs, seed_everything, train_one_epoch
from avel.families import build_model, load_splits

# The full suite only: processes, grids, kills and CLI round trips (the fast tier: -m 'not slow').
pytestmark = pytest.mark.slow

ROWS = 8  # train rows 0..7, global batch 4: two steps per epoch
CASES = {
    "agm": {},
    "amco": {},
    "mla": {"projection": "paper"},
    "relearning": {"every": 1, "times": 1},  # re-initialised before epoch 2: features gathered over ranks
    "reconboost": {"boost_epochs": 1, "correct_epochs": 1},  # epoch 2 boosts visual, 3 corrects
    "greedy": {"start": 0, "eps": 0.0},  # re-balancing windows from the first step (CG-MNIST MMTM)
}
MODELS = {"greedy": {"model": "cgmnist", "fusion": "mmtm"}}  # the others: AVEL concat on features
WORKER = (
    "import os, sys; sys.path.insert(0, 'tests'); import torch; "
    "from test_distributed_part2 import balancer_epoch; "
    "torch.save(balancer_epoch(sys.argv[1], sys.argv[2]), sys.argv[3].format(os.environ['RANK']))"
)


def balancer_epoch(data_path: str, name: str) -> dict:
    """Epoch 3 of ``name`` (AMCo masks from its second step on) on this rank's share of rows 0..7."""
    torch.set_num_threads(1)
    ctx, _ = distributed.init("cpu")
    model_cfg = MODELS.get(name, {})
    cfg = TrainConfig(data=data_path, width=8, batch_size=4, shuffle=False, balance=name, lr=0.5, **model_cfg)
    data = load_splits(data_path, family=cfg.model, device="cpu")
    seed_everything(0)
    balancer = build_balancer(name, **CASES[name])
    model = balancer.prepare_model(build_model(**_build_args(model_kwargs(cfg, data))))
    model = distributed.wrap(model, ctx, balancer=name, find_unused=True, sync_bn=False)
    share = ROWS // ctx.world
    rows = torch.arange(ctx.rank * share, (ctx.rank + 1) * share)  # rank r: rows 4r..4r+3
    if not ctx.active:  # one process: each global batch = the ranks' shares of it (0, 1, 4, 5 | 2, 3, 6, 7)
        rows = torch.arange(ROWS).reshape(2, 2, 2).transpose(0, 1).reshape(-1)
    train = distributed.shard_split(data.train, rows)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    logs = {}
    for epoch in (2, 3):
        balancer.on_epoch_start(distributed.unwrap(model), DataSplits(train, data.val, data.test), epoch)
        logs = train_one_epoch(model, balancer, train, optimizer, cfg, torch.Generator())
        logs = distributed.mean_logs(logs)
    result = {
        "params": {k: v.clone() for k, v in distributed.unwrap(model).state_dict().items()},
        "logs": logs,
        "state": balancer.state_dict(),
    }
    distributed.close()
    return result


@pytest.fixture(scope="module")
def toy_even(tmp_path_factory):
    from conftest import write_toy_features

    path = tmp_path_factory.mktemp("dist2") / "toy.h5"
    write_toy_features(path, videos=40)
    return path


@pytest.fixture(scope="module")
def cg_even(tmp_path_factory):
    from test_intermediate import _write_tiny_mnist

    from avel.synth.cgmnist import CGMNISTConfig, make_cgmnist

    folder = tmp_path_factory.mktemp("mnist_idx2")
    _write_tiny_mnist(folder)
    out = tmp_path_factory.mktemp("cg_dist2") / "cg.h5"
    make_cgmnist(out, CGMNISTConfig(seed=0, test_color_match=0.0), mnist_dir=folder)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_match_one_process(toy_even, cg_even, tmp_path, name):
    path = str(cg_even if name in MODELS else toy_even)
    procs = start(["-c", WORKER, path, name, str(tmp_path / "r{}.pt")], 2, tmp_path)
    one = balancer_epoch(path, name) if name not in MODELS else None
    wait(procs, tmp_path)
    r0, r1 = (torch.load(tmp_path / f"r{r}.pt", weights_only=False) for r in (0, 1))
    if name == "greedy":  # MMTM models have BatchNorm: each rank normalises with its half batch (no
        # SyncBatchNorm on gloo), so only the ranks' agreement is exact: the same weights, gate averages
        # (summed over the ranks) and re-balancing windows on both
        for k, v in r0["params"].items():
            if "running_" not in k and "num_batches" not in k:
                assert torch.equal(v, r1["params"][k]), k
        assert r0["logs"] == r1["logs"] and r0["logs"]["curation_mode"] > 0
        assert torch.equal(r0["state"]["sums"], r1["state"]["sums"])
        assert r0["params"]["avg_audio_0"].abs().sum() > 0
        return
    for k, v in one["params"].items():
        torch.testing.assert_close(r0["params"][k], v, atol=1e-5, rtol=0)
        assert torch.equal(r0["params"][k], r1["params"][k]), k
    for k, v in one["logs"].items():  # epoch means over the ranks (equal shares): the global ones
        assert r0["logs"][k] == pytest.approx(v, abs=1e-5), k
    if name == "agm":
        torch.testing.assert_close(r0["state"]["running"], one["state"]["running"], atol=1e-5, rtol=0)
    if name == "amco":
        assert torch.equal(r0["state"]["dependent"], one["state"]["dependent"])
        assert one["logs"]["mask_rate"] > 0
    if name == "mla":
        torch.testing.assert_close(r0["state"]["P"], one["state"]["P"], atol=1e-5, rtol=0)
