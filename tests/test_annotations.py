"""Annotations.txt / split parsing: formats, labels, errors, and the facts of the real AVE files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from avel.preprocessing.annotations import (
    class_order,
    load_ave,
    match_split,
    one_hot,
    read_annotations,
    segment_labels,
)

SHARED_AVE = Path(__file__).resolve().parents[2] / "shared" / "ave"
LINES = [
    "Baby cry, infant cry&a-b_c&good&2&7",
    "Frying (food)&x_1&good&0&10",
    "Baby cry, infant cry&a-b_c&bad&8&10",
    "Rodents, rats, mice&zz&good&4&4",
]


@pytest.mark.parametrize(
    "text",
    [
        "\n".join(LINES) + "\n",
        "Category&VideoID&Quality&StartTime&EndTime\n" + "\n".join(LINES),
        "\ufeffCategory&VideoID&Quality&StartTime&EndTime\r\n" + "\r\n".join(LINES) + "\r\n\r\n",
        "\ufeff" + "\r\n".join(LINES),
    ],
    ids=["lf", "header", "bom-header-crlf", "bom-crlf"],
)
def test_formats_parse_the_same(tmp_path, text):
    p = tmp_path / "Annotations.txt"
    p.write_bytes(text.encode())
    rows = read_annotations(p)
    assert [r.key for r in rows] == [
        ("Baby cry, infant cry", "a-b_c", "good", 2, 7),
        ("Frying (food)", "x_1", "good", 0, 10),
        ("Baby cry, infant cry", "a-b_c", "bad", 8, 10),
        ("Rodents, rats, mice", "zz", "good", 4, 4),
    ]
    assert class_order(rows) == ["Baby cry, infant cry", "Frying (food)", "Rodents, rats, mice"]


def test_segment_labels_and_one_hot(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("\n".join(LINES))
    rows = read_annotations(p)
    classes = class_order(rows)
    labels = segment_labels(rows, classes)
    assert labels.dtype == np.int64
    assert labels.tolist() == [
        [3, 3, 0, 0, 0, 0, 0, 3, 3, 3],  # start <= t < end
        [1] * 10,
        [3] * 8 + [0, 0],
        [3] * 10,  # start == end: no event segment
    ]
    oh = one_hot(labels, 4)
    assert oh.shape == (4, 10, 4) and oh.dtype == np.uint8 and (oh.sum(-1) == 1).all()
    assert (oh.argmax(-1) == labels).all()
    # a given class list fixes the order (background = its length)
    given = ["Frying (food)", "Rodents, rats, mice", "Baby cry, infant cry", "Bark"]
    assert segment_labels(rows, class_order(rows, given))[1].tolist() == [0] * 10
    with pytest.raises(ValueError, match=r"not in the given class list: \['Frying \(food\)'\]"):
        class_order(rows, ["Baby cry, infant cry", "Rodents, rats, mice"])


@pytest.mark.parametrize(
    "line, message",
    [
        ("Bark&id1&good&2", "expected 5 fields"),
        ("Bark&id1&good&two&7", "start/end must be whole seconds, got 'two', '7'"),
        ("Bark&id1&good&7&2", "need 0 <= start <= end <= 10, got start=7, end=2"),
        ("Bark&id1&good&0&11", "need 0 <= start <= end <= 10, got start=0, end=11"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, message):
    p = tmp_path / "Annotations.txt"
    p.write_text(f"Category&VideoID&Quality&StartTime&EndTime\n{LINES[0]}\n\n{line}\n")
    with pytest.raises(ValueError, match=rf"Annotations\.txt:4: {message}"):
        read_annotations(p)


def test_split_matching(tmp_path):
    (tmp_path / "Annotations.txt").write_text("\n".join(LINES))
    rows = read_annotations(tmp_path / "Annotations.txt")
    (tmp_path / "trainSet.txt").write_text(f"{LINES[2]}\r\n{LINES[0]}\r\n")
    assert match_split(rows, tmp_path / "trainSet.txt").tolist() == [2, 0]  # full-line identity
    (tmp_path / "valSet.txt").write_text(f"{LINES[1]}\nBaby cry, infant cry&a-b_c&good&2&8\n")
    with pytest.raises(ValueError, match=r"valSet\.txt:2: no matching line in the annotations"):
        match_split(rows, tmp_path / "valSet.txt")


@pytest.fixture(scope="module")
def real():
    if not (SHARED_AVE / "Annotations.txt").is_file():
        pytest.skip("../shared/ave is not present")
    return load_ave(SHARED_AVE)


def test_real_ave_facts(real):
    from avel.synth.classes import AVE_CLASSES

    assert len(real.rows) == 4143
    assert real.classes == list(AVE_CLASSES) and real.background == 28
    assert {k: len(v) for k, v in real.splits.items()} == {"train": 3339, "val": 402, "test": 402}
    ids = Counter(r.video_id for r in real.rows)
    assert len(real.rows) - len(ids) == 46  # rows beyond the first of a repeated id (44 twice, 1 thrice)
    labels = real.segment_labels()
    assert labels.shape == (4143, 10) and (labels == 28).mean() == pytest.approx(0.17, abs=0.005)
    assert np.mean([r.start == 0 and r.end == 10 for r in real.rows]) == pytest.approx(0.66, abs=0.01)
    assert sum(r.start == r.end for r in real.rows) == 1
    all_rows = np.concatenate(list(real.splits.values()))
    assert sorted(all_rows.tolist()) == list(range(4143))  # the splits partition the rows
