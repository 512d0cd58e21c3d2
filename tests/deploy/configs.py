"""Small run configs shared by the deployment tests (digits, 3 sites, a few rounds).

Every config has ``federation.transport = "flower"``: the one key that makes a simulation
config a deployed one. Each site gets the same file as its own copy (``config`` in its
node config); the simulation of the same file is the reference.
"""

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

[federation]
transport = "flower"
"""

SECAGG = """
[aggregation]
summation = "secagg"
bits = {bits}
quantize_range = 4.0
neighbours = {k}
"""

PRIVACY = """
[privacy]
enabled = true
target_epsilon = 8.0
delta = 1e-3
secure_rng = false
"""

SAMPLE = """
[privacy.sample_level]
enabled = true
max_grad_norm = 1.0
expected_batch_size = 16
"""

CLIENT = """
[privacy.client_level]
enabled = true
clip_norm = 0.5
mechanism = "{mechanism}"
"""


def write_config(
    path: Path, name: str, rounds: int = 2, sites: int = 3, secagg: bool = False,
    dp: bool = False, k: int = 2, client: str | None = None, bits: int = 32,
) -> Path:
    """A run config; ``dp``: sample-level DP-SGD; ``client``: ``"central"`` or
    ``"distributed"`` client-level DP."""
    text = BASE.format(name=name, rounds=rounds, out=path.parent / "sim", sites=sites)
    if secagg:
        text += SECAGG.format(k=k, bits=bits)
    if dp or client:
        text += PRIVACY
    if dp:
        text += SAMPLE
    if client:
        text += CLIENT.format(mechanism=client)
    path.write_text(text)
    return path


def site_configs(
    config: Path, sites: int = 3, share_counts: bool = False
) -> list[dict[str, object]]:
    """Node configs: site i's part of digits, its own copy of the run config."""
    out: list[dict[str, object]] = []
    for i in range(sites):
        nc: dict[str, object] = {"dataset": "digits", "partition-id": i,
                                 "config": str(config)}
        if share_counts:
            nc["share-example-counts"] = True
        out.append(nc)
    return out
