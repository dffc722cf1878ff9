"""Strategy ``full``: fine-tune every weight of the model."""

from __future__ import annotations

from tuneyard.core.components import TrainingStrategy
from tuneyard.core.hookspecs import hookimpl


class FullFineTune(TrainingStrategy):
    """Full fine-tuning: all parameters are trained; checkpoints are whole models (safetensors)."""

    name = "full"
    description = "Full fine-tune: train every weight (checkpoints are whole models)"


@hookimpl
def register_training_strategies(register):
    register(FullFineTune)
