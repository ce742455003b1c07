"""Training, evaluation, checkpoints, configs and what a run records (the loop and its parts)."""
