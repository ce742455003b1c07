"""Turning AVE-layout video folders and feature releases into avel HDF5 files (never imports ``avel``).

annotations: Annotations.txt / split parsing, class order, per-segment labels.
video, audio: decord decoding, frames per second, log-spectrograms.
h5: the HDF5 schemas (data/README.md). pipeline: ``avel preprocess`` of AVE; clip_pipeline: of clip sets
(CREMA-D, a manifest); runs: one preprocess run of any layout (shard files, resume, ``--shard``/``--merge``,
assemble: the final file). features: ``avel import-features``.
"""
