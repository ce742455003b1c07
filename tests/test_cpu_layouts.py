"""The one CPU convolution that gets a channels_last input (issue #24 forbids it elsewhere: a CPU kernel of
that path segfaults on Intel Xeon and AMD EPYC): the fused CG-MNIST stem's 5×5 convolution
(``avel.models.encoders.stem_channels_last``). Its forward and backward run in a subprocess, so that a crash
fails this test and names the shape, over what the paper recipe meets: the gray and colored stems (2 and 4
input channels), fp32 and bf16 autocast, training (weight gradient) and evaluation, every batch size of
1 to 65 (a train epoch's last: 48) and 112, 240, 256 (evaluation); outputs equal the NCHW
convolution's up to rounding."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from avel.models.encoders import CGConvNet, stem_channels_last

pytestmark = pytest.mark.slow  # subprocesses (the fast tier leaves out modules that run processes)

WORKER = textwrap.dedent(
    """
    import sys
    import torch
    import torch.nn.functional as F
    from avel.models.encoders import FusedBNConv, MaxPool2d
    from torch import nn

    torch.set_num_threads(1)
    for channels in (1, 3):
        torch.manual_seed(channels)
        bn, conv = nn.BatchNorm2d(channels), nn.Conv2d(channels, 32, 5, 1, 2)
        stem, pool = FusedBNConv(bn, conv), MaxPool2d(3, 2, 1, grad_channels_last=True)
        for amp in (False, True):
            for batch in [*range(1, 66), 112, 240, 256]:
                print(f"start C={channels} amp={amp} batch={batch}", flush=True)
                x = torch.rand(batch, 28, 28, channels).permute(0, 3, 1, 2)
                for training in (True, False):
                    stem.train(training)
                    conv.zero_grad()
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                        y = F.relu(pool(stem(x)))
                    assert y.is_contiguous() and y.isfinite().all()
                    if training:
                        y.float().square().mean().backward()
                        assert conv.weight.grad.isfinite().all() and bn.weight.grad.isfinite().all()
                # the NCHW convolution of the same weights gives the same output up to rounding
                stem.eval()
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                    x_hat = F.batch_norm(x, bn.running_mean, bn.running_var, None, None, False, 0.0, bn.eps)
                    ext = torch.cat([x_hat, torch.ones_like(x_hat[:, :1])], 1)
                    gamma, beta = bn.weight.view(1, -1, 1, 1), bn.bias.view(1, -1, 1, 1)
                    w = torch.cat([conv.weight * gamma, (conv.weight * beta).sum(1, True)], 1)
                    ref = F.conv2d(ext.contiguous(), w, conv.bias, 1, 2)
                    got = stem(x)
                assert got.is_contiguous(memory_format=torch.channels_last)
                tol = 0.05 if amp else 1e-4
                torch.testing.assert_close(got.float(), ref.float(), rtol=tol, atol=tol)
    print("ok", flush=True)
    """
)


def test_the_fused_stem_conv_takes_channels_last_in_a_subprocess_over_its_shapes():
    done = subprocess.run([sys.executable, "-c", WORKER], capture_output=True, text=True, timeout=600)
    started = [line for line in done.stdout.splitlines() if line.startswith("start")]
    assert done.returncode == 0, f"exit {done.returncode} at {started[-1:]}: {done.stderr[-2000:]}"
    assert done.stdout.splitlines()[-1] == "ok"
    assert len(started) == 2 * 2 * (65 + 3)


def test_only_the_stem_conv_is_let_through():
    """The predicate admits the fused stem's convolution and nothing else of the encoders (issue #24's 1×1
    stride-2 shape and the CG-MNIST 3×3 convolutions stay NCHW)."""
    x = torch.zeros(2, 4, 28, 28)
    assert stem_channels_last(x, torch.zeros(32, 4, 5, 5))
    assert stem_channels_last(torch.zeros(2, 2, 28, 28), torch.zeros(32, 2, 5, 5))
    assert not stem_channels_last(torch.zeros(48, 8, 56, 56), torch.zeros(16, 8, 1, 1))  # issue #24's
    net = CGConvNet(3)
    for conv in (net.conv2, net.conv3, net.conv4):
        assert not stem_channels_last(torch.zeros(2, conv.in_channels, 14, 14), conv.weight)
    assert not stem_channels_last(torch.zeros(2, 32, 28, 28), torch.zeros(32, 32, 5, 5))  # wider input
