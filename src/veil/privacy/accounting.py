"""Thin layer over dp-accounting: accountants, the DP events veil spends, calibration.

Every ε veil reports is ``accountant.compose(event).get_epsilon(delta)`` on a
dp-accounting accountant (RDP or PLD, add-or-remove-one neighbouring relation); this
module only builds the :class:`dp_accounting.DpEvent` trees and never evaluates a privacy
formula of its own.

Events used by veil:

* DP-SGD at a site, one round: ``SelfComposed(PoissonSampled(q, Gaussian(σ)), steps)``.
* DP-FedAvg, one round for a fixed set of contributors: ``Gaussian(z)`` (fixed clip) or
  ``Composed([Gaussian(z), Gaussian(2 σ_b)])`` (adaptive clip: updates and the
  unclipped count, sensitivity 1/2). :func:`sampled` turns it into the round's event for
  the cohort scheme under add/remove-one-site (:mod:`veil.privacy.neighbouring`):
  ``PoissonSampled(q, Gaussian(z'))`` for Poisson cohorts, ``PoissonSampled(m/N,
  Gaussian(z'/2))`` for fixed-size cohorts (an added site displaces one), where z' merges
  composed Gaussians into one.

Every accountant/event pair is checked with the accountant's ``supports()`` before it is
used (:func:`check_supported`): an unsupported pair is a :class:`ConfigError` naming
``privacy.accountant`` and the accountant that does support it, never dp-accounting's
``UnsupportedEventError``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import attr
import dp_accounting as dpa
from dp_accounting import dp_event as dpe
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from veil.errors import ConfigError, LocalError

__all__ = [
    "make_accountant",
    "check_supported",
    "epsilon",
    "dpsgd_round_event",
    "sampled",
    "calibrate_noise",
    "event_to_json",
    "event_from_json",
    "ACCOUNTANTS",
]

ACCOUNTANTS = ("rdp", "pld")

#: PLD discretisation (dp-accounting's default): ε is an upper bound within ~1e-4.
PLD_DISCRETISATION = 1e-4
CALIBRATION_DISCRETISATION = 1e-3


class _DropRdpConvergenceNotes(logging.Filter):
    """dp-accounting's RDP accountant logs a warning each time a fractional order's series
    fails to converge; it then leaves that order out (ε stays a valid upper bound). Those
    notes flood the console during calibration, so veil drops exactly that message."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to converge" not in record.getMessage()


_RDP_FILTER = _DropRdpConvergenceNotes()


def make_accountant(kind: str, discretisation: float = PLD_DISCRETISATION) -> dpa.PrivacyAccountant:
    """A fresh dp-accounting accountant (add-or-remove-one neighbouring relation).

    Args:
        kind: ``"rdp"`` or ``"pld"``.
        discretisation: PLD value discretisation (coarser is faster and, with
            dp-accounting's pessimistic estimates, still an upper bound on ε).

    Raises:
        ConfigError: unknown accountant name.
    """
    if kind == "rdp":
        absl_logger = logging.getLogger("absl")
        if _RDP_FILTER not in absl_logger.filters:
            absl_logger.addFilter(_RDP_FILTER)
        return rdp_privacy_accountant.RdpAccountant()
    if kind == "pld":
        return pld_privacy_accountant.PLDAccountant(
            value_discretization_interval=discretisation
        )
    raise ConfigError(
        f"unknown accountant {kind!r}; choose one of {ACCOUNTANTS}", key="privacy.accountant"
    )


def check_supported(event: dpe.DpEvent, kind: str, what: str = "this run") -> None:
    """Refuse an event that the ``kind`` accountant cannot compose (before anything runs).

    Args:
        event: the DP event (e.g. a whole planned schedule).
        kind: ``"rdp"`` or ``"pld"``.
        what: what the event describes, for the message.

    Raises:
        ConfigError: (key ``privacy.accountant``) the accountant does not support the
            event; the message names an accountant that does, if any.
    """
    if make_accountant(kind).supports(event):
        return
    others = [k for k in ACCOUNTANTS if k != kind and make_accountant(k).supports(event)]
    fix = (
        f'set privacy.accountant = "{others[0]}"'
        if others
        else "no dp-accounting accountant supports it; change the mechanism or the sampling"
    )
    raise ConfigError(
        f"the {kind!r} accountant cannot account {what} "
        f"({_describe(event)}); {fix}",
        key="privacy.accountant",
    )


def _describe(event: dpe.DpEvent) -> str:
    name = type(event).__name__.removesuffix("DpEvent").replace("ZC", "zCDP")
    inner = [getattr(event, "event", None)] + list(getattr(event, "events", None) or [])
    parts = [_describe(e) for e in inner if isinstance(e, dpe.DpEvent)]
    return f"{name}({', '.join(dict.fromkeys(parts))})" if parts else name


def epsilon(event: dpe.DpEvent, delta: float, kind: str) -> float:
    """ε(δ) of ``event`` on a fresh accountant of ``kind`` (``inf`` if not private).

    Raises:
        ConfigError: the accountant does not support the event (:func:`check_supported`).
    """
    check_supported(event, kind)
    return float(make_accountant(kind).compose(event).get_epsilon(delta))


def dpsgd_round_event(noise_multiplier: float, sampling_rate: float, steps: int) -> dpe.DpEvent:
    """The DP event of ``steps`` DP-SGD steps with Poisson rate ``q`` and noise ``σ``."""
    if steps <= 0:
        return dpe.NoOpDpEvent()
    inner: dpe.DpEvent = dpe.GaussianDpEvent(float(noise_multiplier))
    if sampling_rate < 1.0:
        inner = dpe.PoissonSampledDpEvent(float(sampling_rate), inner)
    return dpe.SelfComposedDpEvent(inner, int(steps))


def sampled(
    event: dpe.DpEvent, sampling: str, rate: float, amplify: bool = True
) -> dpe.DpEvent:
    """A per-round client-level event for the runtime's cohort scheme (add/remove one site).

    ``rate`` is ``cohort / n_sites``. Poisson cohorts: ``PoissonSampled(rate, event)``;
    fixed-size cohorts: ``PoissonSampled(rate, event with doubled sensitivity)`` (an added
    site displaces another; derivation in :mod:`veil.privacy.neighbouring`); ``rate = 1``
    with a fixed cohort (every site every round): the event itself. Composed Gaussians
    are merged into the one Gaussian they equal, so both accountants support the result.

    Args:
        event: the round's event for a fixed set of contributors.
        sampling: ``"poisson"`` or ``"fixed"``.
        rate: cohort / n_sites.
        amplify: ``False`` when the observer knows the cohorts (public-seed sampling,
            recorded cohorts): no subsampling amplification is claimed.

    Raises:
        ConfigError: unknown sampling or a rate outside (0, 1].
    """
    from veil.privacy.neighbouring import event_at_rate

    return event_at_rate(event, sampling, float(rate), amplify)


def calibrate_noise(
    make_event: Callable[[float], dpe.DpEvent],
    target_epsilon: float,
    delta: float,
    kind: str,
    what: str = "noise_multiplier",
) -> float:
    """Smallest noise multiplier whose event meets ``(target_epsilon, delta)``.

    Uses :func:`dp_accounting.calibrate_dp_mechanism` (the returned value never exceeds
    the target ε). PLD calibration searches on a 10x coarser grid, whose pessimistic ε is
    an upper bound of the fine one, so the result also fits the run's (fine) accountant.

    Args:
        make_event: noise multiplier → the whole planned schedule's DP event.
        target_epsilon: ε budget.
        delta: δ.
        kind: ``"rdp"`` or ``"pld"``.
        what: name of the parameter for error messages.

    Raises:
        ConfigError: no noise multiplier reaches the target (e.g. a fixed second
            mechanism already spends more than the budget).
    """
    # Below ~0.3 the PLD grids get huge and DP-SGD is barely private; a budget already met
    # at the lowest value returns it (more noise than strictly needed, never less).
    lowest = 0.3
    check_supported(make_event(lowest), kind, what)
    try:
        low = make_accountant(kind, CALIBRATION_DISCRETISATION).compose(make_event(lowest))
        if low.get_epsilon(delta) <= target_epsilon:
            return lowest
        return float(
            dpa.calibrate_dp_mechanism(
                lambda: make_accountant(kind, CALIBRATION_DISCRETISATION),
                make_event,
                target_epsilon,
                delta,
                dpa.LowerEndpointAndGuess(lowest, 1.0),
                tol=1e-4,
            )
        )
    except (ValueError, dpa.mechanism_calibration.NoBracketIntervalFoundError) as e:
        raise ConfigError(
            f"no {what} reaches ε={target_epsilon} at δ={delta}: even very large noise does not "
            "fit the budget. Raise target_epsilon, run fewer rounds, or raise the noise of the "
            "fixed part (privacy.client_level.adaptive.count_stddev)",
            key="privacy",
        ) from e


# -- (de)serialisation for checkpoints --------------------------------------------------


def event_to_json(event: dpe.DpEvent) -> dict[str, Any]:
    """A JSON-serialisable description of a dp-accounting event (for checkpoints)."""
    if not isinstance(event, dpe.DpEvent):
        raise LocalError(f"not a DpEvent: {type(event).__name__}")
    out: dict[str, Any] = {"type": type(event).__name__}
    for f in attr.fields(type(event)):
        out[f.name] = _to_json(getattr(event, f.name))
    return out


def _to_json(v: Any) -> Any:
    if isinstance(v, dpe.DpEvent):
        return event_to_json(v)
    if isinstance(v, (list, tuple)):
        return [_to_json(x) for x in v]
    return v


def event_from_json(d: Mapping[str, Any]) -> dpe.DpEvent:
    """Inverse of :func:`event_to_json`.

    Raises:
        LocalError: unknown event type (a corrupted checkpoint).
    """
    cls = getattr(dpe, str(d.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, dpe.DpEvent)):
        raise LocalError(f"unknown DP event type in checkpoint: {d.get('type')!r}")
    kwargs = {k: _from_json(v) for k, v in d.items() if k != "type"}
    return cls(**kwargs)


def _from_json(v: Any) -> Any:
    if isinstance(v, Mapping) and "type" in v:
        return event_from_json(v)
    if isinstance(v, list):
        return [_from_json(x) for x in v]
    return v


def finite_or_inf(x: float) -> float:
    """``x`` as float, mapping NaN to ``inf`` (a non-private event has ε = ∞)."""
    return math.inf if math.isnan(x) else float(x)
