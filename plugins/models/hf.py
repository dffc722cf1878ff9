"""Model provider ``hf``: a transformers model from a local folder or the local HF cache.

Nothing is ever downloaded (see :mod:`tuneyard.core.models`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.components import ModelProvider, Task
from tuneyard.core.hookspecs import hookimpl
from tuneyard.core.models import load_pretrained, locate, looks_like_path

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class HFOptions(BaseModel):
    """Options of the ``hf`` model provider."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description=(
        "Model folder (with config.json, weights and tokenizer files), a file path inside an "
        "installed package ('package:NAME/sub/folder'), or a hub id such as "
        "'HuggingFaceTB/SmolLM2-135M-Instruct' that is already in the local HF cache "
        "(nothing is downloaded)."
    ))
    revision: str | None = Field(
        default=None, description="Hub branch, tag or commit of a hub id (default: main)."
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Run the model's own Python code (config auto_map); only for folders you "
        "trust.",
    )


class HFModel(ModelProvider):
    """A transformers model and tokenizer from a folder or the local HF cache.

    When the tokenizer has no pad token, its EOS token is used (pad == eos); the data pipeline
    keeps the real EOS label in that case.
    """

    name = "hf"
    description = "transformers model from a local folder or a hub id already in the HF cache"
    Options = HFOptions
    tasks = ("causal-lm", "masked-lm", "token-classification", "sequence-classification")

    def load(self, *, task: Task, dtype: torch.dtype, labels: list[str] | None = None,
             **kwargs: Any) -> tuple[Any, Any]:
        """Load the model for ``task`` in ``dtype`` on CPU, and its tokenizer; for a label task
        the head is sized by ``labels`` (newly initialised when the folder has none, e.g. a
        classifier on an encoder checkpoint).

        Raises:
            TuneyardError: ``model.options.path`` is not an existing folder nor in the local HF
                cache, or holds no model with a ``task`` head.
        """
        field = "model.options.path"
        source = locate(self.options.path, field, self.options.revision)
        if self.options.trust_remote_code:
            log.warning("model.options.trust_remote_code is on: the Python code shipped with "
                        "%s (config auto_map) runs in this process", source)
        return load_pretrained(
            source, task=task, dtype=dtype, field=field, revision=self.options.revision,
            trust_remote_code=self.options.trust_remote_code, labels=labels,
        )

    def model_id(self) -> str:
        """The folder name, the ``NAME/sub/folder`` of a ``package:`` path, or the hub id."""
        path = self.options.path
        if path.startswith("package:"):
            return path[len("package:"):].rstrip("/")
        if looks_like_path(path) or Path(path).expanduser().exists():
            return Path(path).expanduser().resolve().name
        return path


@hookimpl
def register_model_providers(register):
    register(HFModel)
