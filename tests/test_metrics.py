"""Metrics of the AVE protocol against hand computations."""

import math

import pytest
import torch

from avel.engine import metrics

BG = 3  # background index of a 4-label toy problem


def test_segment_accuracy_hand_computed():
    labels = torch.tensor([[0, 0, BG, BG], [1, 1, 1, BG]])
    pred = torch.tensor([[0, 1, BG, 0], [1, 1, 1, BG]])
    # correct segments: video 0 -> 2 of 4, video 1 -> 4 of 4: 6 / 8
    assert metrics.accuracy(pred, labels) == 0.75
    assert metrics.always_background_accuracy(labels, BG) == 3 / 8


def test_per_class_and_background_event_accuracy():
    labels = torch.tensor([[0, 0, BG, BG], [1, 1, 1, BG]])
    pred = torch.tensor([[0, 1, BG, 0], [1, 1, 1, BG]])
    per = metrics.per_class_accuracy(pred, labels, 4)
    assert per[0] == 0.5 and per[1] == 1.0 and math.isnan(per[2]) and per[3] == pytest.approx(2 / 3)
    be = metrics.background_event_accuracy(pred, labels, BG)
    assert be == pytest.approx({"background_accuracy": 2 / 3, "event_accuracy": 4 / 5})


def test_confusion_rows_are_true_labels():
    cm = metrics.confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 2)
    assert cm.tolist() == [[1, 1], [0, 1]]


def test_event_detection_prf_and_boundaries():
    # video 0: events at 1..3 (G = {1,2,3}), predicted {2,3,4}: P = R = 2/3, onset err 1, offset err 1
    # video 1: no event, nothing predicted: P = R = F1 = 1, no boundary error counted
    labels = torch.tensor([[BG, 0, 0, 0, BG], [BG] * 5])
    pred = torch.tensor([[BG, BG, 0, 2, 1], [BG] * 5])
    out = metrics.event_detection_prf(pred, labels, BG)
    assert out["event_precision"] == pytest.approx((2 / 3 + 1) / 2)
    assert out["event_recall"] == pytest.approx((2 / 3 + 1) / 2)
    assert out["event_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert out["onset_error_s"] == 1.0 and out["offset_error_s"] == 1.0
