"""Benchmarks (`veil bench NAME --json PATH`). Performance targets live here, never in unit tests.

Each benchmark is a function ``run(quick: bool = False) -> dict`` in its own module; the
registry below maps the CLI name to ``"module:function"``. A result dict holds the numbers
(medians, ratios measured side by side in one run), the machine and the date; the CLI prints
it as a table and writes it as JSON.
"""

from __future__ import annotations

__all__ = ["BENCHMARKS"]

# name -> "module:function"; one line per benchmark.
BENCHMARKS: dict[str, str] = {
    "dpsgd": "veil.bench.dpsgd:run",
    "utility": "veil.bench.utility:run",
    "simulation": "veil.bench.simulation:run",
    "secagg": "veil.bench.secagg:run",
    "audit": "veil.bench.audit:run",
    "secagg_round": "veil.bench.secagg_round:run",
    "ckks_agg": "veil.bench.ckks_agg:run",
    "synth": "veil.bench.synth:run",
    "deploy": "veil.bench.deploy:run",
    "inference": "veil.bench.inference:run",
    "async": "veil.bench.async_:run",
    "robust": "veil.bench.robust:run",
    "compression": "veil.bench.compression:run",
}
