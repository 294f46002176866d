"""Training engine: the train loop, checkpoints, learning-rate schedule, metrics and DDP helpers."""
