"""Accuracies (%) the PMR paper (Fan et al., CVPR 2023) publishes, shown beside avel's own grids
(``avel.experiments.ablate``): ``AVE`` keyed (grid kind, model family) (CG-MNIST under the cgmnist
family), ``CREMAD`` keyed grid kind, then (row, column) of the table as ``avel.experiments.ablate`` labels
them."""

from __future__ import annotations

# published AVE accuracies (%), keyed (kind, family) -> (row, column) -> value (PMR Tables 1, 2, 4, 5, 6)
AVE: dict[tuple[str, str], dict[tuple[str, str], float]] = {
    ("optimizers", "resnet18"): {
        ("SGD", "baseline"): 65.4,
        ("AdaGrad", "baseline"): 65.1,
        ("Adam", "baseline"): 64.4,
        ("SGD", "PMR"): 67.1,
        ("AdaGrad", "PMR"): 66.2,
        ("Adam", "PMR"): 66.5,
    },
    ("fusions", "resnet18"): {
        ("concat", "baseline"): 65.4,
        ("sum", "baseline"): 65.1,
        ("FiLM", "baseline"): 64.4,
        ("gated", "baseline"): 63.5,
        ("concat", "PMR"): 67.1,
        ("sum", "PMR"): 68.1,
        ("FiLM", "PMR"): 66.4,
        ("gated", "PMR"): 62.7,
        ("audio only", "baseline"): 62.1,
        ("visual only", "baseline"): 31.0,
    },
    ("fusions", "avel"): {
        ("concat", "baseline"): 72.7,
        ("DMRN", "baseline"): 73.1,
        ("concat", "PMR"): 74.3,
        ("DMRN", "PMR"): 74.2,
    },
    ("subset", "resnet18"): {
        ("baseline", "accuracy"): 65.4,
        ("PMR, 1%", "accuracy"): 62.1,
        ("PMR, 5%", "accuracy"): 65.8,
        ("PMR, 10%", "accuracy"): 67.1,
        ("PMR, 50%", "accuracy"): 67.7,
        ("PMR, 100%", "accuracy"): 67.3,
    },
    ("balancers", "resnet18"): {
        ("naive", "concat"): 65.4,
        ("naive", "FiLM"): 64.4,
        ("dropout", "concat"): 66.4,
        ("dropout", "FiLM"): 63.9,
        ("OGM-GE", "concat"): 65.9,
        ("OGM-GE", "FiLM"): 65.1,
        ("Gradient-Blending", "concat"): 65.5,
        ("Gradient-Blending", "FiLM"): 65.2,
        ("PMR w/o PER", "concat"): 67.2,
        ("PMR w/o PER", "FiLM"): 65.6,
        ("PMR", "concat"): 67.1,
        ("PMR", "FiLM"): 66.4,
    },
    # CG-MNIST (PMR Tables 1 and 3; Table 2 has no CG-MNIST column: its naive and PMR cells are Table 1's)
    ("fusions", "cgmnist"): {
        ("concat", "baseline"): 58.4,
        ("sum", "baseline"): 59.1,
        ("FiLM", "baseline"): 60.0,
        ("gated", "baseline"): 59.8,
        ("concat", "PMR"): 77.2,
        ("sum", "PMR"): 78.5,
        ("FiLM", "PMR"): 76.3,
        ("gated", "PMR"): 68.7,
        ("gray only", "baseline"): 99.3,
        ("colored only", "baseline"): 60.4,
    },
    ("balancers", "cgmnist"): {
        ("naive", "concat"): 58.4,
        ("naive", "FiLM"): 60.0,
        ("PMR", "concat"): 77.2,
        ("PMR", "FiLM"): 76.3,
    },
    ("intermediate", "cgmnist"): {
        ("MMTM", "naive"): 71.4,
        ("MMTM", "PMR"): 74.2,
        ("CentralNet", "naive"): 69.3,
        ("CentralNet", "PMR"): 72.1,
    },
    ("balancers", "avel"): {
        ("naive", "concat"): 72.7,
        ("naive", "DMRN"): 73.1,
        ("PMR", "concat"): 74.3,
        ("PMR", "DMRN"): 74.2,
    },
}


# published CREMA-D accuracies (%), keyed grid kind -> (row, column) -> value (PMR Tables 1, 2, 3, 5, 6)
CREMAD: dict[str, dict[tuple[str, str], float]] = {
    "optimizers": {
        ("SGD", "baseline"): 53.2,
        ("AdaGrad", "baseline"): 58.8,
        ("Adam", "baseline"): 59.8,
        ("SGD", "PMR"): 61.1,
        ("AdaGrad", "PMR"): 61.5,
        ("Adam", "PMR"): 65.3,
    },
    "fusions": {
        ("concat", "baseline"): 53.2,
        ("sum", "baseline"): 52.9,
        ("FiLM", "baseline"): 57.2,
        ("gated", "baseline"): 58.4,
        ("concat", "PMR"): 61.1,
        ("sum", "PMR"): 59.4,
        ("FiLM", "PMR"): 61.8,
        ("gated", "PMR"): 59.9,
        ("audio only", "baseline"): 54.4,
        ("visual only", "baseline"): 58.0,
    },
    "subset": {
        ("baseline", "accuracy"): 53.2,
        ("PMR, 1%", "accuracy"): 54.1,
        ("PMR, 5%", "accuracy"): 58.4,
        ("PMR, 10%", "accuracy"): 61.1,
        ("PMR, 50%", "accuracy"): 61.2,
        ("PMR, 100%", "accuracy"): 61.5,
    },
    "balancers": {
        ("naive", "concat"): 53.2,
        ("naive", "FiLM"): 57.2,
        ("dropout", "concat"): 55.8,
        ("dropout", "FiLM"): 58.3,
        ("Gradient-Blending", "concat"): 56.7,
        ("Gradient-Blending", "FiLM"): 58.7,
        ("OGM-GE", "concat"): 57.7,
        ("OGM-GE", "FiLM"): 58.0,
        ("PMR w/o PER", "concat"): 60.3,
        ("PMR w/o PER", "FiLM"): 61.3,
        ("PMR", "concat"): 61.1,
        ("PMR", "FiLM"): 61.8,
    },
    "intermediate": {  # Table 3 (one frame per clip in the paper)
        ("MMTM", "naive"): 51.6,
        ("MMTM", "PMR"): 55.1,
        ("CentralNet", "naive"): 50.2,
        ("CentralNet", "PMR"): 52.9,
    },
}


# BalanceBenchmark (Xu, Cui, Huang, Wang, Hu, 2025) on CREMA-D: test accuracy and macro-F1 (%) of each method,
# from the results table the toolkit's README shows (github.com/GeWu-Lab/BalanceBenchmark,
# images/Results.jpeg; its own protocol: ResNet18 encoders, concat fusion, its own recipe). Keyed by
# ``avel ablate balancers``'s row labels where avel has the method.
BALANCE_BENCHMARK_CREMAD: dict[str, tuple[float, float]] = {
    "audio only": (59.38, 59.23),  # "Unimodal-1"
    "visual only": (58.10, 56.81),  # "Unimodal-2"
    "naive": (65.50, 65.07),  # "Baseline"
    "MMCosine": (67.19, 67.34),
    "UMT": (67.47, 67.75),
    "MBSD": (74.86, 75.48),
    "CML": (69.18, 69.57),
    "Gradient-Blending": (71.59, 71.72),
    "MMPareto": (79.97, 80.57),
    "LFM": (70.02, 69.55),
    "OGM-GE": (67.76, 68.02),  # "OGM"
    "PMR": (67.19, 67.20),
    "OPM": (68.75, 69.00),
    # the optimization-, forward- and data-level methods (issue 28)
    "AGM": (71.59, 72.11),
    "AMCo": (73.30, 73.95),
    "MLA": (72.30, 72.66),
    "Greedy": (66.48, 66.54),
    "ReLearning": (71.02, 71.46),
    "ReconBoost": (74.01, 74.52),
    "valuation": (75.85, 76.68),  # "Modality-valuation"
}

# the published tables by dataset, each keyed (grid kind, model family): CREMA-D's are the ResNet18 clip
# classifiers' (PMR Tables 1-6); BalanceBenchmark's reference column by (dataset, grid kind, model family)
PUBLISHED: dict[str, dict[tuple[str, str], dict[tuple[str, str], float]]] = {
    "ave": AVE,
    "crema-d": {(kind, "resnet18"): values for kind, values in CREMAD.items()},
}
REFERENCE: dict[tuple[str, str, str], dict[str, tuple[float, float]]] = {
    ("crema-d", "balancers", "resnet18"): BALANCE_BENCHMARK_CREMAD,
}
