#!/usr/bin/env bash
# Benchmarks 1-3 of issue #7 (overhead.py, packing.py, mfu.py) on one GPU, GPU-sized, in under
# 5 minutes on an H200; each table goes to $OUT/NAME.md (default ./bench-out), all output to
# $OUT/gpu.log.
#
#   bench/gpu.sh --prepare   here, once (network): fill the git-ignored .whl/ (wheels for Python
#                            3.12 that the GPU machine lacks or has in other versions) and
#                            .bench-data/ (WordNet, SmolLM2's tokenizer: bench/common.py)
#   bench/gpu.sh             on the GPU machine (no network; python3 with torch + CUDA), with
#                            .whl and .bench-data carried along: installs .whl/ and tuneyard
#                            into /tmp/site, then runs the benchmarks
#   bench/gpu.sh --smoke     here, on CPU with .venv: the same steps at tiny sizes
#
# SmolLM2-135M runs with random weights on the GPU machine (its 98 MB GGUF file is not carried):
# the same architecture, hence the same FLOPs and speed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
MODE=${1:-gpu}

if [ "$MODE" = --prepare ]; then
    .venv/bin/python bench/common.py --prepare
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl \
        transformers==5.24.0 huggingface_hub==2.4.0 httpx2==2.16.2 httpcore2==2.16.2 \
        h11==0.16.0 anyio==4.16.0 idna==3.20 truststore==0.10.5 tokenizers==0.23.3 \
        safetensors==0.8.0 regex==2026.11.19 tqdm==4.70.1 filelock==4.3.1 peft==0.21.2 \
        pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
        typing_extensions==4.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
        sqlite-utils==4.2.1 sqlite-fts4==1.0.3 python-dateutil==4.0.0 plotext==5.3.2 \
        setuptools==84.2.1
    du -sh .whl .bench-data
    exit 0
fi

if [ "$MODE" = --smoke ]; then
    PY=.venv/bin/python
    OVERHEAD=(--model tiny --steps 6 --warmup 2 --micro-batch 2 --repeat 1)
    PACKING=(--model tiny --steps 3 --warmup 1 --micro-batch 2)
    MFU=(--smollm2 random --steps 3 --warmup 1 --micro-batch 2)
    TINY=(--model tiny --steps 6 --warmup 2 --micro-batch 2 --repeat 1)
else
    PY=python3
    if [ -x /opt/torch/.venv/bin/python3 ]; then PY=/opt/torch/.venv/bin/python3; fi
    # sized from the H200 run of 2026-11-30: install 26 s; overhead at --repeat 2 took 240 s
    # (each run ~40 s, mostly start-up), packing 15 steps ~60 s, mfu 15 steps ~100 s
    OVERHEAD=(--model smollm2-random --steps 40 --warmup 10 --micro-batch 32 --repeat 1)
    PACKING=(--model smollm2-random --steps 15 --warmup 5 --micro-batch 32)
    MFU=(--smollm2 random --steps 15 --warmup 5 --micro-batch 64)
    TINY=(--model tiny --steps 200 --warmup 20 --micro-batch 32 --repeat 2)
fi
FAILED=()

bench() {  # bench NAME SCRIPT ARGS...: its table to $OUT/NAME.md; a failure is noted, not fatal
    local name=$1
    shift
    echo "== $name: $* ($SECONDS s in)"
    if ! $PY "$@" | tee "$OUT/$name.md"; then
        FAILED+=("$name")
    fi
}

main() {
    if [ "$MODE" != --smoke ]; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl
        export PYTHONPATH=/tmp/site
        $PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
            --no-cache-dir --upgrade --target /tmp/site .
        nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv || true
    fi
    $PY -c 'import os, platform, torch, transformers, peft, accelerate, datasets, pydantic
print(f"python {platform.python_version()}, torch {torch.__version__}, transformers "
      f"{transformers.__version__}, peft {peft.__version__}, accelerate {accelerate.__version__}, "
      f"datasets {datasets.__version__}, pydantic {pydantic.__version__}; {os.cpu_count()} CPUs; "
      + (f"{torch.cuda.get_device_name()}, bf16 {torch.cuda.is_bf16_supported()}"
         if torch.cuda.is_available() else "no CUDA"))'
    bench overhead bench/overhead.py "${OVERHEAD[@]}"
    bench packing bench/packing.py "${PACKING[@]}"
    bench mfu bench/mfu.py "${MFU[@]}"
    if [ "$SECONDS" -lt 200 ]; then  # the tiny model: the per-step overhead alone, if time is left
        bench overhead-tiny bench/overhead.py "${TINY[@]}"
    fi
    echo "== done in $SECONDS s; tables in $OUT/${FAILED[*]:+; FAILED: ${FAILED[*]}}"
    [ ${#FAILED[@]} -eq 0 ]
}

main 2>&1 | tee "$OUT/gpu.log"
