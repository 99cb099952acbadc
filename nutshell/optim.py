"""ns.optim: optimizers with PyTorch's names and defaults, and LR schedules."""
from nutshell.frontends.optim import (SGD, Adagrad, Adam, AdamW, CosineSchedule,  # noqa: F401
                                      ExponentialSchedule, LinearWarmup, Optimizer, RMSprop,
                                      Schedule, StepSchedule)
