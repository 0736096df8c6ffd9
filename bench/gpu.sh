#!/usr/bin/env bash
# One-shot GPU check (issue 16.3): the engine tests on the device, engine vs naive on AlexNet
# (2,048 images, fp32 and bf16), images/s, fraction of the FLOP floor, fp32 counts against the
# CPU, and the projected time of the paper grid on 50,000 images -- one table in bench/tables/.
# The steps and sizes: bench/gpu_check.py's docstring. Works offline (random-init AlexNet, the
# benchmark's own digit JPEGs); needs the repository's .venv: run `make env` first, or carry
# .venv to the GPU machine.
#
#   bash bench/gpu.sh --device cuda                   # on a machine with one CUDA GPU: < 8 min
#   bash bench/gpu.sh --device cpu --quick            # dry path, CPU only (CI): < 1 min
#   bash bench/gpu.sh --device cuda --out DIR         # the table into DIR instead
#
# Exit status 1 when a test or a step fails (never for time). Arguments go to bench/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x .venv/bin/python ]]; then
    echo "bench/gpu.sh: no .venv in $(pwd): run 'make env' first (or carry .venv to this machine)" >&2
    exit 2
fi
exec .venv/bin/python bench/gpu_check.py "$@"
