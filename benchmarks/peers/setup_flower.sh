#!/usr/bin/env bash
# Create an isolated virtual environment for Flower (the peer of `veil bench simulation`).
#
# flwr is never a dependency of veil's default install: this venv lives in .peers/flwr/
# (gitignored) and the benchmark runs benchmarks/peers/flower_sim.py with its python as a
# subprocess. torch is pinned to the exact version veil uses (pip takes the local CPU
# wheel); an unpinned torch request could pull several GB of CUDA wheels, so the plan is
# checked with --dry-run first and refused if it would install any nvidia-* package.
#
# Usage: bash benchmarks/peers/setup_flower.sh   (from the repository root; ~1-3 minutes)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.peers/flwr"
PYTHON="${PYTHON:-python3.11}"
TORCH_PIN="torch==2.13.0"
FLWR_PIN="flwr[simulation]==1.41.*"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip

plan="$(mktemp)"
trap 'rm -f "$plan"' EXIT
"$VENV/bin/python" -m pip install --dry-run "$TORCH_PIN" "$FLWR_PIN" scikit-learn numpy >"$plan"
if grep -Eiq 'nvidia-|torch-[0-9.]+[^+]*\+cu|triton' "$plan"; then
    echo "refusing: the install plan would pull CUDA packages:" >&2
    grep -Ei 'Would install' "$plan" >&2
    exit 1
fi
grep -i 'Would install' "$plan" || true

"$VENV/bin/python" -m pip install --quiet "$TORCH_PIN" "$FLWR_PIN" scikit-learn numpy
"$VENV/bin/python" -c "import flwr, torch, ray; print('flwr', flwr.__version__, 'torch', torch.__version__, 'ray', ray.__version__)"
echo "Flower venv ready: $VENV"
