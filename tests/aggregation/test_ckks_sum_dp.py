"""Hybrid HE + DP: distributed discrete-Gaussian noise at each site, summed under CKKS.

The ε a CKKS run reports is checked against an independent dp-accounting computation, and
the noise and planned ε against those of the same run under SecAgg+ (one accounting path).
"""

from __future__ import annotations

import math

import dp_accounting
import numpy as np

from veil.app import train
from veil.federation import build_federation
from veil.federation.config import parse_config

DELTA = 1e-5


def _cfg(tmp_path, summation: str, **agg):
    return parse_config({
        "name": f"ddp-{summation}",
        "seed": 3,
        "rounds": 3,
        "output_dir": str(tmp_path),
        "data": {"dataset": "digits", "sites": 10, "partition": "iid"},
        "model": {"name": "logreg"},
        "local": {"epochs": 1, "batch_size": 32, "lr": 0.1},
        # every site every round (rate 1): the per-round event is charged as it is
        "federation": {"dropout_rate": 0.2, "server_optimizer": "fedavg", "server_lr": 1.0},
        "aggregation": {"summation": summation, "quantize_range": 0.5,
                        "expected_dropout": 0.2, **agg},
        "privacy": {"enabled": True, "target_epsilon": 6.0, "delta": DELTA,
                    "accountant": "rdp",
                    "client_level": {"enabled": True, "clip_norm": 0.5,
                                     "mechanism": "distributed"}},
    })


def test_ckks_and_secagg_share_the_distributed_dp_calibration(tmp_path) -> None:
    ck = build_federation(_cfg(tmp_path, "ckks"))
    sa = build_federation(_cfg(tmp_path, "secagg"))
    assert ck.pipeline.describe() == ["clip", "uniform_mean", "quantize", "distributed_dp", "ckks"]
    assert ck.privacy_noise == sa.privacy_noise  # same z from the same calibration
    assert ck.pipeline.transforms == sa.pipeline.transforms  # same quantiser and noise stage


def test_ckks_distributed_dp_epsilon_matches_independent_accounting(tmp_path) -> None:
    out = train(_cfg(tmp_path, "ckks"))
    rounds = out.result.rounds
    fed_chain = build_federation(_cfg(tmp_path, "ckks")).pipeline.transforms
    q, ddp = fed_chain[2], fed_chain[3]
    d = 64 * 10 + 10  # logreg on digits: 64 inputs, 10 classes
    delta2 = q.scale(10) * 0.5 + math.sqrt(d)  # L2 sensitivity on the integer grid, s·C + √d
    acc = dp_accounting.rdp.RdpAccountant()
    for r in rounds:
        sigma = r["measurements"]["distributed_dp/noise_std_int"]  # each site's σ (grid units)
        # noise counted from the survivors minus the ⌈5 % · 10⌉ = 1 tolerated colluder
        m = int(r["measurements"]["survivors"]) - 1
        rho_gauss = delta2**2 / (2 * m * sigma**2)  # the summed continuous Gaussian's zCDP
        rho = r["measurements"]["distributed_dp/rho"]
        # the discrete Gaussian's bound exceeds the Gaussian's only by its τ term (tiny at
        # this σ): tolerance 1e-6 relative
        assert rho >= rho_gauss * (1 - 1e-12) and rho <= rho_gauss * (1 + 1e-6)
        acc.compose(dp_accounting.ZCDpEvent(rho_gauss))
    independent = acc.get_epsilon(DELTA)
    assert abs(rounds[-1]["epsilon_client"] - independent) <= 1e-3 * independent
    assert rounds[-1]["epsilon_client"] <= 6.0 + 1e-6
    assert ddp.noise_multiplier > 0 and np.isfinite(independent)
