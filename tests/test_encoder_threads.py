"""``encoder_threads = 2`` (on in ``-c cgmnist_paper``): a late fusion's two encoders on two CPU threads,
forward and backward. Real training steps of the paper recipe on a real (small) CG-MNIST file: the same
parameters, BN statistics and evaluation outputs bit for bit as one thread, the second encoder really on
another thread, its errors raised in the caller, and the settings that cannot hold refused by name."""

from __future__ import annotations

import threading

import pytest
import torch

from avel.data.splits import SplitData
from avel.engine.config import load_config, validate
from avel.engine.evaluate import predict_split, train_prototypes
from avel.engine.train import _check_resumable, build_optimizer, make_balancer, train_one_epoch
from avel.families import build_model, load_splits
from avel.models import threads
from avel.synth.cgmnist import make_cgmnist, small


@pytest.fixture(scope="module")
def cg_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("cg") / "cg.h5"
    make_cgmnist(path, small(train=400, test=50))
    return path, load_splits(path, family="cgmnist")


def _train(path, data, n: int, balance: str = "none") -> tuple[dict[str, torch.Tensor], dict, tuple]:
    """Two epochs of -c cgmnist_paper (bf16 autocast, fused stem, SGD) on 192 rows under
    ``encoder_threads(n)``: the model's state, the last epoch's logs, the val predictions and prototypes."""
    cfg = load_config("cgmnist_paper", {"data": str(path), "device": "cpu", "balance": balance})
    torch.manual_seed(0)
    model = build_model("cgmnist", cfg.fusion, input_mode="e2e", num_classes=10, cg_stem=cfg.cg_stem)
    balancer = make_balancer(cfg, model)
    optimizer = build_optimizer(cfg, model.parameters())
    full, rows = data.train, slice(0, 192)
    train = SplitData(full.audio[rows], full.visual[rows], full.labels[rows], full.transform)
    gen = torch.Generator().manual_seed(1)
    intra = torch.get_num_threads()  # the claim is against one thread: one intra-op thread too, whatever
    torch.set_num_threads(1)  # OMP_NUM_THREADS says (more would change the reduction order of the convs)
    try:
        with threads.encoder_threads(n):
            for epoch in range(2):
                balancer.on_epoch_start(model, data, epoch)
                logs = train_one_epoch(model, balancer, train, optimizer, cfg, gen)
            pred = predict_split(model, data.val, 64, amp=True)
            protos = train_prototypes(model, train, 64)
    finally:
        torch.set_num_threads(intra)
    return {k: v.clone() for k, v in model.state_dict().items()}, logs, (pred, protos)


@pytest.mark.parametrize("balance", ["none", "pmr"])
def test_two_encoder_threads_train_the_same_numbers(cg_data, balance):
    """Parameters, BN running statistics, the epoch's logs, val logits / representations and the prototypes
    after two epochs (six SGD steps, bf16 autocast): equal bit for bit to one thread."""
    path, data = cg_data
    state1, logs1, (pred1, protos1) = _train(path, data, 1, balance)
    state2, logs2, (pred2, protos2) = _train(path, data, 2, balance)
    assert state1.keys() == state2.keys()
    for name in state1:
        assert torch.equal(state1[name], state2[name]), name
    assert logs1 == logs2
    for key in pred1:
        assert torch.equal(pred1[key], pred2[key]), key
    assert all(torch.equal(a, b) for a, b in zip(protos1, protos2, strict=True))
    assert not torch.equal(state1["audio_branch.conv1.weight"], _initial("audio_branch.conv1.weight"))


def _initial(name: str) -> torch.Tensor:
    torch.manual_seed(0)
    model = build_model("cgmnist", "concat", input_mode="e2e", num_classes=10, cg_stem="fused")
    return model.state_dict()[name]


def test_the_second_encoder_runs_on_another_thread_forward_and_backward():
    torch.manual_seed(0)
    model = build_model("cgmnist", "concat", input_mode="e2e", num_classes=10, cg_stem="fused")
    seen: dict[str, set[int]] = {"audio": set(), "visual": set()}
    for name in seen:
        branch = getattr(model, f"{name}_branch")
        branch.register_forward_hook(lambda *_, n=name: seen[n].add(threading.get_ident()))
        branch.conv4.weight.register_hook(lambda g, n=name: seen[n].add(-threading.get_ident()) or g)
    gray, colored = torch.rand(4, 1, 28, 28), torch.rand(4, 3, 28, 28)
    before = torch.get_num_threads()
    with threads.encoder_threads(2):
        assert threads.active()
        model(gray, colored).logits.sum().backward()
    assert not threads.active() and torch.get_num_threads() == before
    here = threading.get_ident()
    assert seen["audio"] == {here, -here}
    (fwd,) = {t for t in seen["visual"] if t > 0}
    (bwd,) = {-t for t in seen["visual"] if t < 0}
    assert fwd == bwd != here
    assert all(p.grad is not None for p in model.parameters())
    seen["visual"].clear()
    model(gray, colored)  # outside the context: one thread
    assert seen["visual"] == {here}


def test_an_error_in_the_worker_thread_is_raised_in_the_caller_and_the_next_pass_runs():
    torch.manual_seed(0)
    model = build_model("cgmnist", "concat", input_mode="e2e", num_classes=10)
    gray = torch.rand(2, 1, 28, 28)
    with threads.encoder_threads(2):
        with pytest.raises(RuntimeError, match="running_mean should contain 5 elements"):
            model(gray, torch.rand(2, 5, 28, 28))  # 5 channels into the colored encoder's BN
        out = model(gray, torch.rand(2, 3, 28, 28))
    assert out.logits.shape == (2, 10)


def test_encoder_threads_is_on_in_the_paper_config_only_and_refused_where_it_cannot_hold(tmp_path):
    assert load_config("cgmnist_paper", {}).encoder_threads == 2
    assert load_config("cgmnist", {}).encoder_threads == 1  # the small set's default path is unchanged
    assert load_config("cremad_table1_fusions", {}).encoder_threads == 1
    with pytest.raises(ValueError, match="--encoder-threads: 3 is not allowed: must be one of 1, 2"):
        validate(load_config("cgmnist_paper", {"encoder_threads": 3}))
    with pytest.raises(ValueError, match="parameters from torch.autograd.grad, which mmpareto takes"):
        validate(load_config("cgmnist_paper", {"balance": "mmpareto"}))
    validate(load_config("cgmnist_paper", {"balance": "mmpareto", "encoder_threads": 1}))
    with pytest.raises(ValueError, match="encoder_threads: 4 is not allowed: must be one of 1, 2"):
        with threads.encoder_threads(4):
            pass
    stored = load_config("cgmnist_paper", {"encoder_threads": 1})  # resumable: the same numbers
    from avel.engine import config as config_mod

    _check_resumable(config_mod.to_dict(stored), load_config("cgmnist_paper", {}), tmp_path)
