#!/usr/bin/env bash
# Create an isolated virtual environment for Concrete-ML 1.9.0 (the FHE peer of
# `veil bench inference`). Never a veil dependency: it lives in .peers/concrete/ (gitignored)
# and benchmarks/peers/concrete_bench.py runs with its python as a subprocess.
#
# Concrete-ML 1.9.0 pins torch==2.3.1; veil's machine has torch 2.13.0 (CPU wheel in the local
# wheel directory). So concrete-ml is installed with --no-deps and its other pins are
# installed on top of torch 2.13.0; concrete_bench.py carries the two small shims torch 2.13
# needs (ONNX export through the legacy TorchScript exporter, Tensor.rename for brevitas).
# The plan is checked with --dry-run first and refused if it would pull CUDA packages or
# another torch.
#
# Usage: bash benchmarks/peers/setup_concrete.sh   (from the repository root; a few minutes)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.peers/concrete"
PYTHON="${PYTHON:-python3.11}"
PINS=(
    "torch==2.13.0+cpu"  # the local CPU wheel; never the PyPI build (CUDA deps)
    "concrete-python==2.10.0"
    "brevitas==0.10.2"
    "concrete-ml-extensions==0.1.9"
    "hummingbird-ml[onnx]==0.4.11"
    "numpy==1.26.4"
    "onnx==1.17.0"
    "onnxoptimizer==0.3.13"
    "onnxruntime==1.18"
    "pandas==2.0.3"
    "protobuf>=5.28.3,<6"
    "scikit-learn==1.5.0"
    "scipy>=1.10.1"
    "setuptools>=77.0.3,<81"  # concrete-ml pins 75.3.0; torch 2.13 needs >= 77.0.3; 81+ drops pkg_resources (concrete needs it)
    "skops==0.5.0"
    "skorch==0.11.0"
    "typing-extensions>=4.5.0,<5.0.0"
    "xgboost==1.6.2"
)

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip

plan="$(mktemp)"
trap 'rm -f "$plan"' EXIT
"$VENV/bin/python" -m pip install --dry-run "${PINS[@]}" >"$plan"
if grep -Eiq 'nvidia-|\+cu[0-9]|triton|torch-2\.3' "$plan"; then
    echo "refusing: the install plan would pull CUDA packages or another torch:" >&2
    grep -Ei 'Would install' "$plan" >&2
    exit 1
fi
grep -i 'Would install' "$plan" || true

"$VENV/bin/python" -m pip install --quiet "${PINS[@]}"
"$VENV/bin/python" -m pip install --quiet --no-deps "concrete-ml==1.9.0"
"$VENV/bin/python" "$ROOT/benchmarks/peers/concrete_bench.py" --check
echo "Concrete-ML venv ready: $VENV"
