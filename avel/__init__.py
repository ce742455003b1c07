"""avel: audio-visual event localization with modality rebalancing (PMR, OGM-GE, OPM, IPRM)."""

__version__ = "0.1.0"
