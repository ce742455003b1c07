"""``avel preprocess --shard I/N`` on several machines, then ``--merge``: the file one run writes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from avel.cli import app
from avel.preprocessing.runs import shard_ids

runner = CliRunner()


def h5_contents(path) -> tuple[dict, dict]:
    """Every dataset (as arrays) and every attribute (of the file and of its objects) of an HDF5 file."""
    arrays, attrs = {}, {}
    with h5py.File(path, "r") as f:
        attrs["/"] = {k: v for k, v in f.attrs.items() if k != "created"}  # the time the file was written

        def visit(name, obj):
            attrs[name] = dict(obj.attrs)
            if isinstance(obj, h5py.Dataset):
                arrays[name] = (obj[()], obj.dtype, obj.chunks, obj.fletcher32, obj.compression)

        f.visititems(visit)
    return arrays, attrs


def test_shard_ids_cover_every_video_once():
    ids = [f"v{i}" for i in range(11)]
    shards = [shard_ids(ids, i, 4) for i in range(4)]
    assert shards[1] == ["v1", "v5", "v9"]
    assert sorted(sum(shards, [])) == sorted(ids)
    assert [len(s) for s in shards] == [3, 3, 3, 2]


def test_shards_then_merge_equal_one_run(tiny_ave, tiny_h5, tmp_path):
    out = tmp_path / "merged.h5"
    common = ["--workers", "1", "--frame-size", "32", "--no-progress"]
    r = runner.invoke(app, ["preprocess", str(tiny_ave), str(out), "--shard", "0/2", *common])
    assert r.exit_code == 0, r.output
    assert not out.exists()  # a shard writes shard files only
    r = runner.invoke(app, ["preprocess", str(tiny_ave), str(out), "--merge", *common])
    assert r.exit_code == 2
    assert "20 of 40 videos have no shard" in r.output  # shard 1/2 has not run: refused, nothing decoded
    assert not out.exists()
    r = runner.invoke(app, ["preprocess", str(tiny_ave), str(out), "--shard", "1/2", *common])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["preprocess", str(tiny_ave), str(out), "--merge", *common])
    assert r.exit_code == 0, r.output
    assert "(0 decoded, 40 resumed" in r.output
    merged, merged_attrs = h5_contents(out)
    single, single_attrs = h5_contents(tiny_h5)
    assert set(merged_attrs) == set(single_attrs)
    for name in single_attrs:
        assert merged_attrs[name].keys() == single_attrs[name].keys(), name
        for k, v in single_attrs[name].items():
            assert np.array_equal(np.asarray(merged_attrs[name][k]), np.asarray(v)), (name, k)
    assert merged.keys() == single.keys()
    for name, (data, *layout) in single.items():
        assert np.array_equal(merged[name][0], data), name
        assert merged[name][1:] == tuple(layout), name  # dtype, chunks, checksum, compression


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "2/2"], "--shard 2/2: needs I/N with N >= 1 and 0 <= I < N (I counts from 0)"),
        (["--shard", "a/2"], "--shard a/2: expected I/N, e.g. 0/4"),
        (["--shard", "0/2", "--merge"], "--shard and --merge cannot be combined"),
    ],
)
def test_bad_shard_options(tiny_ave, tmp_path, args, message):
    r = runner.invoke(app, ["preprocess", str(tiny_ave), str(tmp_path / "x.h5"), *args, "--no-progress"])
    assert r.exit_code == 2
    assert message in r.output
