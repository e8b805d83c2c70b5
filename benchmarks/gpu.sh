#!/usr/bin/env bash
# The same tables on a GPU, in bf16: training throughput and peak memory per stage, and generation ms/frame.
# Usage (on a machine with a CUDA GPU): bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e . "jax[cuda12]>=0.10,<0.11"
python benchmarks/train_throughput.py --presets demo,coinrun_jasmine,coinrun --batch 8 --dtype bfloat16 --steps 10
python benchmarks/train_throughput.py --presets coinrun_jasmine,coinrun --batch 36 --dtype bfloat16 --steps 10
python benchmarks/generation.py --presets demo,coinrun_jasmine,coinrun --dtype bfloat16 --frames 10
