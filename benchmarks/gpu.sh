#!/usr/bin/env bash
# The same tables on a GPU, in bf16: training throughput and peak memory per stage, and generation ms/frame with and
# without the KV cache. Generation first: it is the part a short loan most needs.
# Usage (on a machine with a CUDA GPU and a CUDA jax): bash benchmarks/gpu.sh [OUT_DIR]
# If this project is not importable yet, it is installed with pip (which needs a package index); on an offline
# machine put the project's dependencies on PYTHONPATH first, but keep the machine's own jax, flax, optax and orbax
# together (flax 0.12.8 does not import under jax 0.11.2; the pair jax 0.11.2 + flax 0.12.10 ran).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_results}"
PY="${PYTHON:-python3}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
$PY -c "import sys; sys.path[:0] = ['benchmarks']; import generation, train_throughput, cached_equality" 2>/dev/null || $PY -m pip install -q -e . "jax[cuda12]>=0.10,<0.11"
$PY -c "import jax; print('jax', jax.__version__, jax.devices())"
$PY benchmarks/generation.py --presets demo,coinrun_jasmine,coinrun --dtype bfloat16 --contexts 1,4,16,64 \
  --frames 5 | tee "$out/generation.txt"
$PY benchmarks/generation.py --presets coinrun_jasmine --dtype bfloat16 --contexts 16 --batch 16 \
  --frames 5 | tee "$out/generation_batch16.txt"
$PY benchmarks/cached_equality.py --presets demo,coinrun_jasmine --dtypes float32,bfloat16 --positions learned,rope | tee "$out/cached_equality.txt"
$PY benchmarks/train_throughput.py --presets demo,coinrun_jasmine,coinrun --batch 8 --dtype bfloat16 --steps 10 --tokens cache \
  | tee "$out/train_batch8.txt"
$PY benchmarks/train_throughput.py --presets coinrun_jasmine,coinrun --batch 36 --dtype bfloat16 --steps 10 --tokens cache \
  | tee "$out/train_batch36.txt"
