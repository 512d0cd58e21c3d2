"""Small run configs shared by the deployment tests (digits, 3 sites, a few rounds)."""

from __future__ import annotations

from pathlib import Path

BASE = """
name = "{name}"
seed = 3
rounds = {rounds}
output_dir = "{out}"

[data]
dataset = "digits"
sites = {sites}
partition = "iid"

[model]
name = "logreg"

[local]
epochs = 1
batch_size = 32
lr = 0.2
"""

SECAGG = """
[aggregation]
summation = "secagg"
bits = 32
quantize_range = 4.0
neighbours = {k}
"""

DP = """
[privacy]
enabled = true
target_epsilon = 8.0
delta = 1e-3
secure_rng = false

[privacy.sample_level]
enabled = true
max_grad_norm = 1.0
expected_batch_size = 16
"""


def write_config(
    path: Path, name: str, rounds: int = 2, sites: int = 3, secagg: bool = False,
    dp: bool = False, k: int = 2,
) -> Path:
    text = BASE.format(name=name, rounds=rounds, out=path.parent / "sim", sites=sites)
    if secagg:
        text += SECAGG.format(k=k)
    if dp:
        text += DP
    path.write_text(text)
    return path


def site_configs(sites: int = 3, share_counts: bool = False) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i in range(sites):
        nc: dict[str, object] = {"dataset": "digits", "partition-id": i}
        if share_counts:
            nc["share-example-counts"] = True
        out.append(nc)
    return out
