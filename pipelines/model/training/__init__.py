"""Training SASRec, in one process or under ``torchrun``: loop, process group, checkpoints."""
