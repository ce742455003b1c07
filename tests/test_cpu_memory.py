"""``avel.engine.cpu_memory.keep_freed_memory`` (every CPU training run sets it): glibc serves a training
step's tensors from its heap instead of mapping each from the kernel (and unmapping it when freed, so that
the next step page-faults it in afresh). Checked from glibc's own account (``mallinfo2``: bytes in mapped
blocks) in fresh processes, with and without it; the speed is in BENCHMARKS.md."""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import sys

import pytest

from avel.engine import cpu_memory

pytestmark = pytest.mark.slow  # fresh processes (the fast tier leaves out modules that run processes)

MAPPED = """
import ctypes, ctypes.util, sys, torch
from avel.engine.cpu_memory import keep_freed_memory

class MallInfo2(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(n, ctypes.c_size_t) for n in names.split()]

mallinfo2 = ctypes.CDLL(ctypes.util.find_library("c")).mallinfo2
mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    assert keep_freed_memory()
before = mallinfo2().hblkhd
maps = [torch.ones(2 << 20) for _ in range(6)]  # six 8 MB activation-sized tensors
print(mallinfo2().hblkhd - before)
"""


def _glibc_with_mallinfo2() -> bool:
    try:
        ctypes.CDLL(ctypes.util.find_library("c")).mallinfo2  # noqa: B018 (glibc >= 2.33)
    except (OSError, AttributeError):
        return False
    return True


def _mapped(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", MAPPED, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="glibc's allocator (mallinfo2: glibc >= 2.33)")
def test_activation_sized_tensors_come_from_the_heap_not_fresh_mappings():
    assert _mapped("default") >= 8 << 20  # glibc's default maps (at least) the first 8 MB block afresh
    assert _mapped("keep") == 0


def test_it_is_set_once_and_says_whether_it_could():
    assert cpu_memory.keep_freed_memory() is cpu_memory.keep_freed_memory()
    if _glibc_with_mallinfo2():
        assert cpu_memory.keep_freed_memory()
