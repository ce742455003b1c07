"""Models: the AVEL localizer (attention + bi-LSTM, concat / DMRN) and the clip classifiers.

Blocks below assemblies: ``encoders`` (every encoder), ``temporal`` (AVEL's attention and bi-LSTM),
``fusion`` (late fusions and DMRN), ``intermediate`` (MMTM, CentralNet between encoder stages) and
``prototypes`` (PMR's prototype classifier) are the blocks; ``localizer`` and ``classifier`` assemble them;
``base`` holds the ``AVModel`` contract every model follows. Which assembly a run builds, from which data,
is its model family's (``avel.families``: ``build_model`` is the one constructor).
"""

from __future__ import annotations

from avel.models.base import AVModel, ModelOutput, count_parameters

__all__ = ["AVModel", "ModelOutput", "count_parameters"]
