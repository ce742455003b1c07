"""Where a result came from: the code version (git commit, uncommitted changes) and the machine.

Every run directory's ``results.json`` carries ``provenance()``; a grid's table prints it under its command,
so a number in docs/results.md names the commit and the machine that produced it.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]  # the checkout avel is imported from


def _git(*args: str, repo: Path = REPO) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def code_version(repo: Path = REPO) -> dict[str, Any]:
    """``{"commit": full sha or "unknown", "dirty": uncommitted changes to tracked files (bool or None)}``.
    Outside a git checkout (a frozen ``git archive`` of a commit, as the grid scripts make) the commit is
    read from the ``COMMIT`` file beside the package, and ``dirty`` is unknown (None)."""
    commit = _git("rev-parse", "HEAD", repo=repo)
    if not commit:
        try:
            commit = (repo / "COMMIT").read_text().split()[0]
        except (OSError, IndexError):
            commit = None
        return {"commit": commit or "unknown", "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no", repo=repo)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def cpuinfo(field: str) -> str | None:
    """The first ``field`` line's value in /proc/cpuinfo ("model name", "flags"), None where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU's feature flags, sorted (empty where /proc/cpuinfo has none)."""
    return sorted((cpuinfo("flags") or "").split())


def machine(device: torch.device | str = "cpu") -> dict[str, Any]:
    """CPU model, cores, torch threads, torch / python versions and the training device (its GPU name)."""
    device = torch.device(device)
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def provenance(device: torch.device | str = "cpu") -> dict[str, Any]:
    return {"code": code_version(), "machine": machine(device)}


def describe(prov: dict[str, Any]) -> str:
    """One line for a table: ``commit a8c8955 (+ uncommitted changes); AMD EPYC …, 2 cores, 1 torch thread,
    torch 2.14.1, cpu``."""
    if not prov:
        return "an unrecorded commit and machine (a run from before provenance was recorded)"
    code, mach = prov.get("code", {}), prov.get("machine", {})
    commit = str(code.get("commit", "unknown"))[:7]
    dirty = " (+ uncommitted changes)" if code.get("dirty") else ""
    threads = mach.get("torch_threads")
    parts = [
        str(mach.get("cpu", "unknown cpu")),
        f"{mach.get('cores')} cores",
        f"{threads} torch thread{'s' if threads != 1 else ''}",
        f"torch {mach.get('torch')}",
        str(mach.get("gpu") or mach.get("device")),
    ]
    return f"commit {commit}{dirty}; " + ", ".join(parts)
