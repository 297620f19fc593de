"""Training: the run (build, the epoch loop, checkpoints), one epoch, the losses, the optimizer
and its schedules, the metrics log, and stopping on a signal."""
