"""Training utilities: optimizers, schedules, strategies, trainer, loop."""
