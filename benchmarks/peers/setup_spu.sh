#!/usr/bin/env bash
# Create an isolated virtual environment for SecretFlow-SPU 0.9.5 (the MPC peer of
# `veil bench inference`). SPU is never a dependency of veil: this venv lives in .peers/spu/
# (gitignored) and the benchmark runs benchmarks/peers/spu_bench.py with its python as a
# subprocess. Pins: Python 3.11, numpy<2, jax 0.4.34 (SPU 0.9.5 needs jax<=0.4.34; newer
# jax breaks its imports). The plan is checked with --dry-run first and refused if it would
# pull any CUDA package.
#
# Usage: bash benchmarks/peers/setup_spu.sh   (from the repository root; ~1-3 minutes)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.peers/spu"
PYTHON="${PYTHON:-python3.11}"
PINS=("spu==0.9.5" "jax[cpu]==0.4.34" "jaxlib==0.4.34" "numpy<2" "scikit-learn<1.6" "threadpoolctl")

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip

plan="$(mktemp)"
trap 'rm -f "$plan"' EXIT
"$VENV/bin/python" -m pip install --dry-run "${PINS[@]}" >"$plan"
if grep -Eiq 'nvidia-|\+cu[0-9]|jax-cuda|triton' "$plan"; then
    echo "refusing: the install plan would pull CUDA packages:" >&2
    grep -Ei 'Would install' "$plan" >&2
    exit 1
fi
grep -i 'Would install' "$plan" || true

"$VENV/bin/python" -m pip install --quiet "${PINS[@]}"
"$VENV/bin/python" -c "import spu, jax, numpy; print('spu', spu.__version__, 'jax', jax.__version__, 'numpy', numpy.__version__)"
echo "SPU venv ready: $VENV"
