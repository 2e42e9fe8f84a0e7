#!/usr/bin/env bash
# One-shot GPU check of deepbsde (see scripts/gpu_check.py): time-to-accuracy, throughput and peak memory,
# eager / torch.compile / float64, d = 100, 1000, 10000. Writes $OUT/gpu_check.md when $OUT is set.
#   scripts/gpu_check.sh                  # on one GPU, within 10 minutes
#   scripts/gpu_check.sh --cpu --quick    # on a CPU, tiny iterations (tests the script)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then py="$PYTHON"; elif [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" scripts/gpu_check.py "$@"
