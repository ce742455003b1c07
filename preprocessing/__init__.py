"""Turning AVE-layout video folders and feature releases into avel HDF5 files (never imports ``avel``).

annotations: Annotations.txt / split parsing, class order, per-segment labels.
video, audio: decord decoding, frames per second, log-spectrograms.
h5: the two HDF5 schemas (data/README.md). pipeline: ``avel preprocess``. features: ``avel import-features``.
"""
