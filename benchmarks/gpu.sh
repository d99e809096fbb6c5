#!/usr/bin/env bash
# The GPU benchmark: one prepared script for one H200 (about 10 minutes with the environment set up).
#  1. MFU of masked-LM pretraining of a BERT-base-sized model in bf16, eager and torch.compile;
#  2. the wall time of the whole pipeline on the GPU profile (benchmarks/gpu_profile.yaml).
# Needs a CUDA GPU; `make setup` installs the pinned environment (torch 2.13.0's Linux wheel from
# PyPI carries CUDA). Run from anywhere: bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
make setup
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'gpu.sh: torch sees no CUDA GPU')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python benchmarks/gpu_mfu.py
python benchmarks/gpu_mfu.py --compile
python benchmarks/gpu_pipeline.py
