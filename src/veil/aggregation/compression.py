"""Put a compression stage into a chain, where it composes (``aggregation.compression``).

=========  ==================================  =========================================
scheme     where it goes                       composes with
=========  ==================================  =========================================
``topk``   last, before a plaintext sum         plain sums only: its support is per site
           (:class:`PayloadSum` counts it)      (refused under SecAgg+ by its domain and
                                                under client-level DP: error feedback)
``randk``  first, before clip/DP/mean           everything: the support is shared, so a
                                                secure sum masks the same coordinates;
                                                under client-level DP without feedback
``qsgd``   last; own scale in a plain sum,     plain and secure sums; refused under
           a shared scale and its own ring     client-level DP (the grid can lengthen a
           under SecAgg+                        clipped vector)
``randk+`` random-k first, QSGD last: the       as QSGD
``qsgd``   ``k`` kept values quantised
=========  ==================================  =========================================

Sample-level DP (DP-SGD at the sites) leaves every scheme free: the update is already
private when it is compressed (post-processing).
"""

from __future__ import annotations

from typing import Any

from veil.aggregation.base import Chain
from veil.aggregation.payload import PayloadSum
from veil.aggregation.plain import WeightedMean
from veil.aggregation.qsgd import QSGD
from veil.aggregation.randk import RandK
from veil.aggregation.topk import TopK
from veil.errors import ConfigError

__all__ = ["SCHEMES", "compressed"]

SCHEMES = ("none", "topk", "randk", "qsgd", "randk+qsgd")


def compressed(
    chain: Chain,
    scheme: str,
    *,
    dim: int | None,
    ratio: float = 0.1,
    bits: int = 4,
    error_feedback: bool = True,
    secure: bool = False,
    client_dp: bool = False,
    seed: int = 0,
    quantize_range: float = 1.0,
    cohort_bound: int = 1,
) -> tuple[Chain, Any | None]:
    """``chain`` with the compression ``scheme`` in its place, and the plain summation it
    needs (``None``: the caller's own).

    Args:
        chain: the run's chain (mean, or client-level DP stages).
        scheme: one of :data:`SCHEMES`.
        dim: the update's length (random-k expands back to it).
        ratio: fraction of coordinates sent (top-k, random-k).
        bits: bits per coordinate (QSGD).
        error_feedback: keep what was not sent at the site (top-k, random-k).
        secure: the summation is secure (SecAgg+).
        client_dp: ``chain`` holds a client-level DP mechanism.
        seed: the shared seed of random-k's supports.
        quantize_range: QSGD's shared scale under a secure sum.
        cohort_bound: most sites in one sum (sizes QSGD's ring under a secure sum).

    Raises:
        ConfigError: an unknown scheme, or one that does not compose with the summation
            or the DP mechanism (the message says which and what to use instead).
    """
    if scheme == "none":
        return chain, None
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown compression {scheme!r}; choose one of {SCHEMES}",
                          key="aggregation.compression")
    if client_dp and scheme != "randk":
        raise ConfigError(
            f"aggregation.compression = {scheme!r} does not compose with client-level DP "
            "(the server-side noise is calibrated to the clip bound, which "
            + ("error feedback escapes" if scheme == "topk" else "quantising can exceed")
            + "); use compression = 'randk', which keeps a data-independent shared "
            "support before the clip",
            key="aggregation.compression",
        )
    tail = 1 if chain.stages and isinstance(chain.stages[-1], WeightedMean) else 0
    if scheme.startswith("randk"):
        if dim is None:
            raise ConfigError("randk needs the update's dimension", key="aggregation.compression")
        # first: the DP clip, the mean and the quantiser all see only the k kept coordinates
        stage = RandK(ratio, int(dim), seed, error_feedback and not client_dp)
        chain = Chain([stage, *chain.stages])
        if scheme == "randk":
            return chain, None
    if scheme == "topk":
        top = TopK(ratio, passthrough=tail, error_feedback=error_feedback)
        # under a secure sum the chain is left to refuse it (its domain names the fix)
        return Chain([*chain.stages, top]), None if secure else PayloadSum(top)
    if secure:
        q = QSGD(bits, scale=quantize_range, cohort_bound=max(1, int(cohort_bound)))
        return Chain([*chain.stages, q]), None
    q = QSGD(bits, passthrough=tail)
    return Chain([*chain.stages, q]), PayloadSum(q)
