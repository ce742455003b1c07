"""Keep decord's and FFmpeg's own error lines ("ERROR opening: ...", "moov atom not found") off the
user's terminal: they are printed by C++ straight to file descriptor 2, beside avel's one-line report of
the same problem. ``quiet_stderr`` points descriptor 2 at /dev/null while a file is opened; threads that
open files at the same time share one redirection."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_state = {"depth": 0, "saved": -1}


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    with _lock:
        if _state["depth"] == 0:
            sys.stderr.flush()
            _state["saved"] = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        _state["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                os.dup2(_state["saved"], 2)
                os.close(_state["saved"])
