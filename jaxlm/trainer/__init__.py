"""Pure train/eval steps, optimizer, checkpoints, metrics and the training loop."""
