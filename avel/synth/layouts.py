"""The synthesiser of each dataset layout (the readers are ``avel.preprocessing.layouts.LAYOUTS``).

``synthesise(layout, out_dir, **options)`` writes an embedded dataset of real media files in that layout;
each synthesiser takes the options of ``avel synth`` it knows (``videos`` is the number of clips) and
leaves the others. Adding a layout adds one line to ``SYNTHESISERS``; ``avel synth`` does not change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from avel.rules import check, one_of


def _known(config_type: type, options: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(config_type)}
    return {k: v for k, v in options.items() if k in names and v is not None}


def synth_ave(out_dir: Path, **options: Any) -> dict[str, Any]:
    """AVE layout: AVE/<id>.mp4, Annotations.txt, train/val/testSet.txt (``avel.synth.ave``)."""
    from avel.synth.ave import SynthConfig, synth_dataset

    return synth_dataset(out_dir, SynthConfig(**_known(SynthConfig, options)))


def _clip_layout(layout: str) -> Callable[..., dict[str, Any]]:
    def synth(out_dir: Path, **options: Any) -> dict[str, Any]:
        """A clip layout (``avel.synth.clips``): CREMA-D's wav + flv and lists, or mp4 + a manifest CSV."""
        from avel.synth.clips import ClipSynthConfig, synth_clips

        options = {**options, "clips": options.get("videos"), "layout": layout}
        return synth_clips(out_dir, ClipSynthConfig(**_known(ClipSynthConfig, options)))

    return synth


SYNTHESISERS: dict[str, Callable[..., dict[str, Any]]] = {
    "ave": synth_ave,
    "crema-d": _clip_layout("crema-d"),
    "manifest": _clip_layout("manifest"),
}


def synthesise(layout: str, out_dir: str | Path, **options: Any) -> dict[str, Any]:
    """Write an embedded dataset in ``layout``; returns its summary."""
    check("layout", layout, one_of(*SYNTHESISERS))
    return SYNTHESISERS[layout](Path(out_dir), **options)
