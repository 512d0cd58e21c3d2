"""Distributed discrete Gaussian: noise variance, accounting identities, pipeline use."""

from __future__ import annotations

import math
from typing import Any

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp

from veil.aggregation.base import EncodeContext, Pipeline
from veil.aggregation.distributed_dp import DistributedDP, ddg_epsilon, discrete_gaussian
from veil.aggregation.quantize import Quantize
from veil.aggregation.secagg import SecAggSum
from veil.crypto import SecureRng
from veil.errors import ConfigError, LocalError


@pytest.mark.parametrize("sigma", [1.0, 3.0, 20.0])
def test_discrete_gaussian_variance(sigma: float) -> None:
    """200 000 samples, fixed seed; tolerance: mean within 5 s.e., variance within 3 %."""
    x = discrete_gaussian(sigma, 200_000, SecureRng.from_seed(11, "dg"))
    assert x.dtype == np.int64
    assert abs(x.mean()) < 5 * sigma / math.sqrt(x.size)
    assert abs(x.var() / sigma**2 - 1) < 0.03


def test_epsilon_tends_to_continuous_gaussian_zcdp() -> None:
    # with large σ, τ → 0 and ρ = Δ²/(2 m σ²) = 1/(2 z²): same ε as a GaussianDpEvent
    z, m, d, delta = 1.2, 20, 1000, 5000.0
    sigma = z * delta / math.sqrt(m)
    rho = ddg_epsilon(delta, sigma, m, d) ** 2 / 2
    assert rho == pytest.approx(1 / (2 * z**2), rel=1e-9)
    a, b = rdp.RdpAccountant(), rdp.RdpAccountant()
    a.compose(dp_accounting.ZCDpEvent(rho))
    b.compose(dp_accounting.GaussianDpEvent(z))
    assert a.get_epsilon(1e-6) == pytest.approx(b.get_epsilon(1e-6), rel=1e-6)
    # small σ: the discreteness term makes ε strictly larger
    assert ddg_epsilon(1.0, 0.3, m, d) > 1.0 / math.sqrt(m * 0.09)


def _rngs(seed: int, n: int) -> list[SecureRng]:
    return [SecureRng.from_seed(seed, f"ddp/s{i}") for i in range(n)]


def _noise_round(n: int, d: int) -> tuple[DistributedDP, Quantize, Any]:
    """One SecAgg+ round of zero updates (site 2 drops after masking), every stream seeded.

    The noise and the stochastic rounding come from each site's seeded CSPRNG stream
    (``SecureRng.from_seed``, injected through ``EncodeContext.rngs``), the SecAgg graph
    and session from fixed keys; only the sites' X25519 keys and mask seeds are fresh OS
    entropy, and the masks cancel exactly in the sum. Production keeps OS entropy.
    """
    q = Quantize(clip=1.0, bits=32, margin=2.0)
    dp = DistributedDP.after(q, n, l2_clip=0.05, noise_multiplier=1.0, expected_dropout=0.1)
    summ = SecAggSum(bits=32, k=6, graph_key=b"g" * 32, session=b"s" * 32)
    p = Pipeline([q, dp], summ)
    ctx = EncodeContext(0, np.arange(n), np.ones(n), None, n, _rngs(5, n))
    _, res = p.run_round(p.init(), np.zeros((n, d)), ctx, dropouts={2: "masked"})
    return dp, q, res


def test_pipeline_noise_variance_and_event() -> None:
    """Sum of survivors' noise has variance m'·σ² (m' = 9).

    Seed fixed (``_rngs(5, n)``); tolerance 10 % on the variance ratio over d = 4000
    coordinates, whose sampling sd is √(2/d) ≈ 2.2 % (4.5 sd); at this seed the ratio is
    1.035. The round is deterministic: a second run gives the same aggregate bit for bit.
    """
    n, d = 10, 4000
    dp, q, res = _noise_round(n, d)
    # a site that missed a stage deadline would change m' (and the event): say so first
    assert sorted(int(s) for s in res.survivors) == [i for i in range(n) if i != 2]
    sigma, delta = dp.site_sigma(n, d)
    noise_float = res.aggregate  # updates are zero: the aggregate is the noise / s
    s = q.scale(n)
    var_int = (noise_float * s).var()
    assert abs(var_int / (9 * sigma**2) - 1) < 0.1
    (event,) = res.dp_events
    assert isinstance(event, dp_accounting.ZCDpEvent)
    assert event.rho == pytest.approx(ddg_epsilon(delta, sigma, 9, d) ** 2 / 2)
    assert event.rho == pytest.approx(1 / 2, rel=0.01)  # z = 1 with m' = m = 9
    _, _, again = _noise_round(n, d)  # fresh SecAgg keys, same seeded noise: same sum
    np.testing.assert_array_equal(again.aggregate, res.aggregate)


def test_ddp_checks() -> None:
    q = Quantize(clip=1.0, bits=16)
    dp = DistributedDP.after(q, 3, l2_clip=1.0, noise_multiplier=50.0)
    ctx = EncodeContext(0, np.arange(3), np.ones(3), None, 3, _rngs(0, 3))
    with pytest.raises(ConfigError, match="head-room"):
        dp.encode(None, [None] * 3, np.zeros((3, 4), np.int64), ctx)
    with pytest.raises(LocalError, match="after Quantize"):
        dp.encode(None, [None] * 3, np.zeros((3, 4)), ctx)
    small = DistributedDP.after(q, 3, l2_clip=1e-4, noise_multiplier=1.0)
    with pytest.raises(LocalError, match="L2 bound"):
        small.encode(None, [None] * 3, np.full((3, 4), 10**3, np.int64), ctx)
