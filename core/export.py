"""Export a finished run as a plain Hugging Face folder (``tuneyard export``).

A whole-model run's final folder is copied as it is. An adapter run's final folder is copied as
an adapter (to load with peft on the base model), or, with ``merge``, its adapter is merged into
the base model with peft's ``merge_and_unload`` (LoRA: W' = W + (alpha / r)·B·A, Hu et al. 2021,
arXiv:2106.09685) and saved as a standalone model that loads with
``AutoModelForCausalLM.from_pretrained`` without tuneyard or peft.

The folder is written under a temporary name next to the target and renamed at the end
(:func:`~tuneyard.core.atomic.written_atomically`), so a failed export leaves no half-written
target; an existing target that is not an empty folder is refused, never overwritten.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneyard.core.atomic import written_atomically
from tuneyard.core.engine import compose
from tuneyard.core.errors import TuneyardError
from tuneyard.core.paths import make_dir
from tuneyard.core.plugins import get_plugins
from tuneyard.core.registry import Registry
from tuneyard.core.run.model import trained_model
from tuneyard.core.run.progress import LogProgress, Progress, quiet_libraries
from tuneyard.core.spec import RunSpec


@dataclass
class Export:
    """What :func:`export_run` wrote.

    Attributes:
        run_id: the exported run.
        path: the new folder (absolute).
        kind: its ``artifacts.kind``: ``merged-model`` (adapter merged into the base) or
            ``export`` (the final folder copied).
        what: what the folder holds, one phrase, e.g. ``merged the lora adapter into
            tiny-llama, float32``.
        n_params: parameters in its ``*.safetensors`` files (tied weights counted once).
        size_bytes: total size of its files, in bytes.
    """

    run_id: str
    path: Path
    kind: str
    what: str
    n_params: int
    size_bytes: int


def export_run(registry: Registry, ref: str, out: str | Path, merge: bool = False,
               progress: Progress | None = None) -> Export:
    """Write run ``ref``'s final checkpoint to the new folder ``out`` and record it as an
    artifact (``merged-model`` with ``merge``, else ``export``).

    Args:
        registry: where the run is recorded.
        ref: run id, unique id prefix or name.
        out: the folder to create; it may exist only as an empty folder. Missing parent folders
            are created (and stay if the export fails).
        merge: merge the run's adapter into its base model (the run's strategy must save an
            adapter, ``TrainingStrategy.saves == "adapter"``) instead of copying the adapter.
        progress: where the phases are reported (default: log lines).

    Raises:
        RunNotFound: no such run. TuneyardError: ``out`` exists and is not an empty folder or
        lies inside the run's final folder; the run has no final checkpoint; ``merge`` on a run
        that saved a whole model or whose strategy does not load a peft model; as for a run
        when the model loads (model provider, strategy plugins).
    """
    progress = progress or LogProgress()
    run = registry.get_run(ref)
    out = Path(out).expanduser().absolute()
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise TuneyardError(f"export: {out} exists and is not an empty folder; give a new path "
                            "(export never overwrites)")
    final = Path(run["output_dir"] or "") / "final"
    if not final.is_dir():
        raise TuneyardError(f"run {run['id']} has no final checkpoint at {final} (status: "
                            f"{run['status']}); only a completed run can be exported")
    if final.resolve() in out.resolve().parents:
        raise TuneyardError(f"export: {out} is inside the run's final folder {final}; give a "
                            "path outside it")
    saves = saved_kind(registry, run, final)
    strategy, base = run["strategy"], run["base_model"]
    if merge and saves != "adapter":
        raise TuneyardError(f"run {run['id']} saved a whole model (strategy '{strategy}'), not "
                            "an adapter: there is nothing to merge; export it without --merge")

    try:
        make_dir(out.parent)
        with written_atomically(out) as partial:
            if merge:
                dtype = merge_adapter(run, final, partial, progress)
                kind, what = "merged-model", f"merged the {strategy} adapter into {base}, {dtype}"
            else:
                progress.phase(f"copying {final}")
                shutil.copytree(final, partial)
                kind = "export"
                what = (f"the {strategy} adapter only, not a whole model: load it with peft on "
                        f"the base model {base}; --merge writes a standalone model"
                        if saves == "adapter"
                        else f"the whole model trained by {strategy} from {base}")
            progress.phase(f"moving it to {out}")
    except OSError as exc:
        raise TuneyardError(f"export: cannot write {out}: {exc.strerror or exc}") from None
    registry.add_artifact(run["id"], kind, str(out))
    return Export(run["id"], out, kind, what, stored_params(out),
                  sum(f.stat().st_size for f in out.rglob("*") if f.is_file()))


def saved_kind(registry: Registry, run: dict[str, Any], final: Path) -> str:
    """What the run's final folder holds, ``model`` or ``adapter``: the artifact kind the run
    recorded for it (its strategy's ``saves``), else the strategy's ``saves`` now."""
    for artifact in registry.artifacts(run["id"]):
        if Path(artifact["path"]) == final:
            return artifact["kind"]
    return compose(RunSpec.model_validate(run["spec"]), get_plugins(), trains=False).strategy.saves


def merge_adapter(run: dict[str, Any], final: Path, out: Path, progress: Progress) -> str:
    """Load the run's trained model (:func:`~tuneyard.core.run.model.trained_model`: base model
    from its model provider in float32, then the adapter in ``final`` through its strategy's
    ``load_checkpoint``), merge it with peft's ``merge_and_unload(safe_merge=True)`` (which
    refuses merged weights holding NaN) and save the model (safetensors) and the tokenizer
    into ``out``. Returns the saved weights' dtype, e.g. ``float32``.

    Raises:
        TuneyardError: the strategy's checkpoint is not a peft model; as for a run (data,
            model).
    """
    from peft import PeftModel

    quiet_libraries()
    comp = compose(RunSpec.model_validate(run["spec"]), get_plugins(), trains=False)
    model, tokenizer, _ = trained_model(comp, run, progress)
    if not isinstance(model, PeftModel):
        raise TuneyardError(f"run {run['id']}: strategy '{comp.strategy.name}' loads its "
                            f"checkpoint as {type(model).__name__}, not a peft model; --merge "
                            "needs a peft adapter (export it without --merge)")
    progress.phase(f"merging the adapter of {final} into the base model")
    merged = model.merge_and_unload(safe_merge=True)
    progress.phase("saving the merged model")
    merged.save_pretrained(out)  # transformers 5 always writes safetensors
    tokenizer.save_pretrained(out)
    return str(merged.dtype).removeprefix("torch.")


def stored_params(folder: Path) -> int:
    """Parameters in ``folder``'s ``*.safetensors`` files (each stored tensor once, so tied
    weights count once), read from their headers with ``safetensors.safe_open``."""
    from safetensors import safe_open

    n = 0
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "pt") as weights:
            n += sum(math.prod(weights.get_slice(k).get_shape()) for k in weights.keys())
    return n
