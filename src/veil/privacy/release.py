"""What a client-level DP run may draw from its randomness, release, and count as noise.

Three rules the federation applies so that the ε it reports holds
(docs/differential-privacy.md):

* **Secret cohorts** (:func:`draw_cohort`): whenever sampling amplification is claimed the
  cohort comes from the privacy CSPRNG (:class:`veil.crypto.prg.SecureRng`), never from a
  generator seeded by the public run seed; anyone with the seed could otherwise recompute
  every cohort, and for that observer amplification is void.
* **Only noised or post-processed numbers** (:func:`release_measurements`): in a DP run the
  per-round record keeps only measurements computed from the noised aggregate, or that are
  public (configuration, protocol counters). Per-site encode statistics (``clip/clipped``,
  ``clip/norm``, ``quantize/clipped_fraction``) and decode statistics computed before the
  noise is added are dropped, fail-closed: a key not known to be safe is not released.
  ``debug = True`` keeps everything and the run is marked not private.
* **Honest noise** (:func:`honest_survivors`, :func:`check_ddg_sigma`): distributed DP
  sizes each site's noise for the sites that will both survive *and* be honest — expected
  survivors minus the sites the SecAgg threat model lets collude with the server — and
  the discrete Gaussian bound's precondition σ ≥ 1/2 is checked.
* **No cohort counts** (:func:`release_round`): with hidden Poisson cohorts (client-level
  DP, ``privacy.record_cohorts = false``) a round's record keeps only keys known to be
  public or noised, fail-closed. Under add/remove-one-site the number of sites selected,
  summed, late or rejected, the bytes they sent, the protocol's counters and the round's
  timings are sensitivity-1 (or worse) functions of the secret cohort — DP-FedAvg divides
  by the fixed expected cohort size precisely so that no count is needed — so they are
  dropped. A fixed-size cohort's counts are public (its size is configuration, dropouts
  are drawn from the seed) and stay.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from veil.aggregation.distributed_dp import check_sigma as check_ddg_sigma
from veil.aggregation.distributed_dp import honest_survivors
from veil.privacy.neighbouring import check_cohort, fixed_cohort_size

__all__ = [
    "DP_STAGES",
    "check_ddg_sigma",
    "draw_cohort",
    "honest_survivors",
    "release_measurements",
    "release_final",
    "release_round",
]

#: Stages whose decode measurements are noised or post-processing of the noised sum.
DP_STAGES = ("dp_fedavg", "adaptive_dp_fedavg", "distributed_dp")
#: Public quantities (functions of the configuration, not of the data).
_PUBLIC = frozenset({"uniform_mean/denominator", "quantize/scale", "survivors", "rejected_sites"})
#: Summation protocols whose measurements are protocol counters and timings.
_PROTOCOLS = ("secagg/",)
#: Measurements that count the round's sites (not public when the cohort is hidden).
_COUNTS = frozenset({"survivors", "rejected_sites"})
#: Round-record keys a hidden-cohort DP round may keep: public (round index, tier,
#: configuration) or noised / post-processing (test metrics of the noised model, ε from
#: the public plan, released measurements).
_ROUND_PUBLIC = frozenset({
    "round", "summation", "test_loss", "test_accuracy", "measurements",
    "epsilon_client", "epsilon_sample_max", "delta",
})
#: what a lost round's record says instead of its reason (which counts sites)
LOST = "round lost (reason withheld: it would count the hidden cohort)"


def draw_cohort(rng: Any, n_sites: int, cohort: float, sampling: str) -> np.ndarray:
    """The round's cohort, drawn from the privacy CSPRNG.

    Args:
        rng: a :class:`veil.crypto.prg.SecureRng` (``SecureRng.fresh()`` in real runs).
        n_sites: population N.
        cohort: expected (Poisson) or exact (fixed, rounded half up) cohort size.
        sampling: ``"poisson"`` (each site with probability cohort/N) or ``"fixed"``
            (a uniform subset of that size).

    Returns:
        Sorted site indices.

    Raises:
        ConfigError: unknown sampling or a cohort outside (0, N].
    """
    check_cohort(sampling, cohort, n_sites)
    u = np.asarray(rng.uniform(n_sites), dtype=np.float64)
    if sampling == "poisson":
        return np.flatnonzero(u < cohort / n_sites).astype(np.int64)
    m = fixed_cohort_size(cohort)
    # the m smallest of N i.i.d. uniforms are a uniform m-subset (ties: probability ~2^-53)
    return np.sort(np.argsort(u, kind="stable")[:m]).astype(np.int64)


def release_measurements(
    measurements: Mapping[str, Any], mechanism: str | None, debug: bool = False
) -> dict[str, Any]:
    """The measurements a DP run may record (all of them without DP or with ``debug``).

    Args:
        measurements: the round's merged measurements (``stage/key`` names).
        mechanism: ``None`` (no client-level DP), ``"central"`` or ``"distributed"``.
        debug: keep un-noised diagnostics (the run must then be marked not private).

    Returns:
        The releasable subset.
    """
    if mechanism is None or debug:
        return dict(measurements)
    out: dict[str, Any] = {}
    for k, v in measurements.items():
        stage = k.split("/", 1)[0]
        if (
            k in _PUBLIC
            or stage in DP_STAGES
            or k.startswith(_PROTOCOLS)
            # distributed DP: quantize decodes the already-noised sum (post-processing)
            or mechanism == "distributed" and k == "quantize/beyond_signal_fraction"
        ):
            out[k] = v
    return out


def release_round(rec: dict[str, Any], sampling: str, debug: bool = False) -> None:
    """Keep only what a reader of a hidden-cohort DP round's record may see (in place).

    Under Poisson sampling, fail-closed: a key not known to be public or noised is
    dropped (``n_selected``, ``n_summed``, ``n_rejected``, ``n_flagged``, ``late``,
    bytes, timings...), as are the count measurements and protocol counters; a lost round
    keeps only the fact (``aborted`` = :data:`LOST`; whether the model moved is visible
    from the model anyway). Fixed-size cohorts are left as they are: their counts are
    public up to sites whose update was rejected as NaN/inf (docs/differential-privacy.md).
    Call it after :func:`veil.federation.simulation.hide_membership`.

    Args:
        rec: the round's record (membership already replaced by counts).
        sampling: ``"poisson"`` or ``"fixed"``.
        debug: ``privacy.debug_unnoised_statistics`` (keep everything; not private).
    """
    if debug or sampling != "poisson":
        return
    lost = "aborted" in rec or "skipped" in rec
    for k in [k for k in rec if k not in _ROUND_PUBLIC]:
        del rec[k]
    meas = rec.get("measurements")
    if isinstance(meas, dict):
        for k in [k for k in meas if k in _COUNTS or k.startswith(_PROTOCOLS)]:
            del meas[k]
    if lost:
        rec["aborted"] = LOST


#: Run-summary keys a hidden-cohort DP run may keep: public (configuration, the round
#: count, why it stopped, a buffered run's public schedule) or of the noised model.
_FINAL_PUBLIC = frozenset({
    "status", "rounds_completed", "stopped_reason", "test_accuracy", "test_loss", "schedule",
})


def release_final(final: dict[str, Any], sampling: str, debug: bool = False) -> None:
    """Keep only what a reader of a hidden-cohort DP run's summary may see (in place).

    The run-level counterpart of :func:`release_round`, with the same rule: under Poisson
    sampling, fail-closed, a key not known to be public or noised is dropped — the run's
    wall time and exchange count grow with the secret cohorts' sizes. Fixed-size cohorts
    and ``debug`` leave the summary as it is.
    """
    if debug or sampling != "poisson":
        return
    for k in [k for k in final if k not in _FINAL_PUBLIC]:
        del final[k]
