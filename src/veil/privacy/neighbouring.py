"""Client-level DP events under a stated neighbouring relation, for each cohort scheme.

veil states one neighbouring relation for client-level DP: **add-or-remove one site**
(:data:`RELATION`), the relation dp-accounting's accountants use by default. Two
federations are neighbours when one has every site of the other plus one more. The
number of sites and the cohort parameters (``cohort``, ``n_sites``, hence the rate
``q = cohort / n_sites``) are public configuration, not functions of the private data.

A round's client-level mechanism (DP-FedAvg: clip each update to C, Gaussian noise of
std ``z C`` on the sum, fixed denominator; or the distributed discrete Gaussian) is
described by a *per-round event for a fixed set of contributors*: adding a site to that
set moves the sum by at most C, so DP-FedAvg's event is ``Gaussian(z)``. How the cohort is
drawn decides what a neighbouring federation changes:

* **Poisson cohorts** (each site independently with probability q): an added site joins
  the cohort with probability q and displaces nobody. The round is
  ``PoissonSampled(q, event)`` (amplification by Poisson subsampling, add/remove).
* **Fixed-size cohorts** (m of N sites without replacement): an added site joins with
  probability m/N *and displaces another site*, so the sum moves by up to 2C. Couple the
  two federations' cohorts (draw the m-subset S of the smaller one; when the added site x
  is drawn in the larger one, it takes the place of a uniform member y of S): then the
  larger federation's output is the mixture ``(1 − q)·M(S) + q·M(S − y + x)`` with
  ``q = m/N`` (N = the larger federation's size, the configured population), and the
  smaller one's is ``M(S)``. By joint convexity of the hockey-stick divergence, both
  directions are bounded by the Poisson-subsampled mechanism with rate q and *doubled
  sensitivity*: ``PoissonSampled(m/N, Gaussian(z/2))`` for DP-FedAvg. The bound is tight:
  with every other site contributing −C and the added site +C (one coordinate), the pair
  is exactly that mixture. (dp-accounting's ``SampledWithoutReplacementDpEvent`` is only
  supported under replace-one by the RDP accountant; converting a replace-one bound to
  add/remove would cost a group-of-two factor anyway, so veil uses the coupling above,
  which both accountants support.) Mechanisms that dp-accounting cannot subsample
  (the distributed discrete Gaussian's ``ZCDp(ρ)``) get the doubled sensitivity and no
  amplification: ``ZCDp(4ρ)`` (zCDP group privacy for a group of two, Bun & Steinke 2016,
  Prop. 27; also ε_DDG(2Δ) ≤ 2 ε_DDG(Δ)), a valid but looser bound.
* **Full participation** (fixed cohort = every site): an added site joins every round and
  displaces nobody, so the round is the event itself (no amplification).

Composed Gaussians (DP-FedAvg with adaptive clipping: the update sum and the unclipped
count) are merged into one Gaussian with ``z = (Σ z_i⁻²)^(-1/2)`` — an identity (the PLD
of a Gaussian mechanism is N(μ²/2, μ²), closed under convolution; the subsampled pair of
a product of Gaussians is rotation-invariant) — so that dp-accounting's PLD accountant can
subsample it (it rejects ``PoissonSampled(Composed(...))``).

A cohort is only amplified against an observer who does not know who took part: veil
claims amplification only when the cohort is drawn from the privacy CSPRNG and not
written where that observer reads (see :func:`basis`).
"""

from __future__ import annotations

import math
from typing import Any

from dp_accounting import dp_event as dpe

from veil.errors import ConfigError

__all__ = [
    "RELATION",
    "SAMPLINGS",
    "basis",
    "check_cohort",
    "cohort_event",
    "cohort_rate",
    "fixed_cohort_size",
    "double_sensitivity",
    "event_at_rate",
    "merge_gaussians",
]

#: The neighbouring relation every client-level ε is stated under.
RELATION = "add_or_remove_one_site"
SAMPLINGS = ("poisson", "fixed")


def merge_gaussians(event: dpe.DpEvent) -> dpe.DpEvent:
    """Replace a composition of Gaussian events by the one Gaussian it equals.

    ``Composed([Gaussian(z_1), ..., Gaussian(z_k)])`` → ``Gaussian((Σ z_i⁻²)^(-1/2))``;
    anything else is returned unchanged (``SelfComposed`` is merged inside).
    """
    if isinstance(event, dpe.SelfComposedDpEvent):
        return dpe.SelfComposedDpEvent(merge_gaussians(event.event), event.count)
    if not isinstance(event, dpe.ComposedDpEvent):
        return event
    parts = [merge_gaussians(e) for e in event.events]
    parts = [p for p in parts if not isinstance(p, dpe.NoOpDpEvent)]
    if parts and all(isinstance(p, dpe.GaussianDpEvent) for p in parts):
        zs = [float(p.noise_multiplier) for p in parts]  # type: ignore[attr-defined]
        if any(z == 0 for z in zs):
            return dpe.NonPrivateDpEvent()
        return dpe.GaussianDpEvent(1.0 / math.sqrt(sum(z**-2 for z in zs)))
    if len(parts) == 1:
        return parts[0]
    return dpe.ComposedDpEvent(parts) if parts else dpe.NoOpDpEvent()


def double_sensitivity(event: dpe.DpEvent) -> dpe.DpEvent:
    """The event of the same mechanism when one neighbour may move the query by 2Δ.

    Gaussian(z) → Gaussian(z/2), Laplace(b) → Laplace(b/2), ZCDp(ρ) → ZCDp(4ρ); the
    map goes through compositions.

    Raises:
        ConfigError: an event whose doubled-sensitivity version veil does not know.
    """
    if isinstance(event, (dpe.NoOpDpEvent, dpe.NonPrivateDpEvent)):
        return event
    if isinstance(event, dpe.GaussianDpEvent):
        return dpe.GaussianDpEvent(float(event.noise_multiplier) / 2)
    if isinstance(event, dpe.LaplaceDpEvent):
        return dpe.LaplaceDpEvent(float(event.noise_multiplier) / 2)
    if isinstance(event, dpe.ZCDpEvent) and float(event.xi) == 0.0:
        return dpe.ZCDpEvent(rho=4.0 * float(event.rho))
    if isinstance(event, dpe.ComposedDpEvent):
        return dpe.ComposedDpEvent([double_sensitivity(e) for e in event.events])
    if isinstance(event, dpe.SelfComposedDpEvent):
        return dpe.SelfComposedDpEvent(double_sensitivity(event.event), event.count)
    raise ConfigError(
        f"cannot account a fixed-size cohort for a {type(event).__name__}; use "
        "federation.sampling = 'poisson'",
        key="federation.sampling",
    )


def fixed_cohort_size(cohort: float) -> int:
    """Sites a fixed-size cohort of (possibly fractional) size ``cohort`` draws.

    Half rounds up, at least one site: the one rounding the server's draw, its fixed
    denominator and the accounting all use (a cohort of 2.5 draws 3 sites and is charged
    at rate 3/N, never 2/N).
    """
    return max(1, int(math.floor(float(cohort) + 0.5)))


def cohort_rate(sampling: str, cohort: float, n_sites: int) -> float:
    """The rate ``q`` a round is charged at: ``cohort / N`` (Poisson) or ``m / N`` (fixed).

    ``m`` is :func:`fixed_cohort_size`; ``q`` is capped at 1.
    """
    m = float(cohort) if sampling == "poisson" else float(fixed_cohort_size(cohort))
    return min(1.0, m / n_sites)


def check_cohort(sampling: str, cohort: float, n_sites: int) -> None:
    """Refuse an unknown cohort scheme or a cohort outside ``(0, n_sites]``.

    Raises:
        ConfigError: unknown sampling or a cohort outside ``(0, n_sites]``.
    """
    if sampling not in SAMPLINGS:
        raise ConfigError(
            f"unknown sampling {sampling!r}; choose one of {SAMPLINGS}", key="federation.sampling"
        )
    if not (n_sites >= 1 and 0 < cohort <= n_sites):
        raise ConfigError(
            f"cohort {cohort} must be in (0, n_sites={n_sites}]", key="federation.cohort_size"
        )


def cohort_event(
    event: dpe.DpEvent, sampling: str, cohort: float, n_sites: int, amplify: bool = True
) -> dpe.DpEvent:
    """One round's client-level event under add/remove-one-site, for the cohort scheme.

    Args:
        event: the round's event for a fixed set of contributors (sensitivity: one site).
        sampling: ``"poisson"`` or ``"fixed"``.
        cohort: expected (Poisson) or exact (fixed; rounded as the runtime rounds it)
            number of sites per round.
        n_sites: the configured population N.
        amplify: ``False`` when the cohort is known to the observer (drawn from the public
            seed, or recorded): the round is then charged as if the site took part.

    Returns:
        The event to charge (see the module docstring for the derivation).

    Raises:
        ConfigError: unknown sampling, a cohort outside ``(0, n_sites]``, or an event the
            fixed-size bound cannot handle.
    """
    check_cohort(sampling, cohort, n_sites)
    return event_at_rate(event, sampling, cohort_rate(sampling, cohort, n_sites), amplify)


def event_at_rate(
    event: dpe.DpEvent, sampling: str, rate: float, amplify: bool = True
) -> dpe.DpEvent:
    """:func:`cohort_event` with the rate ``q = cohort / n_sites`` given directly.

    Raises:
        ConfigError: unknown sampling, ``rate`` outside (0, 1], or an event the
            fixed-size bound cannot handle.
    """
    if sampling not in SAMPLINGS:
        raise ConfigError(
            f"unknown sampling {sampling!r}; choose one of {SAMPLINGS}", key="federation.sampling"
        )
    if not 0.0 < rate <= 1.0:
        raise ConfigError(f"cohort rate {rate} must be in (0, 1]", key="federation.cohort_size")
    ev = merge_gaussians(event)
    if rate >= 1.0:  # every site every round: nobody is displaced, nothing amplifies
        return ev
    if sampling == "fixed":
        ev = merge_gaussians(double_sensitivity(ev))
    if amplify and isinstance(ev, (dpe.GaussianDpEvent, dpe.LaplaceDpEvent)):
        return dpe.PoissonSampledDpEvent(float(rate), ev)
    # Not amplified (known cohorts), or dp-accounting cannot subsample this event (e.g.
    # zCDP): the round is charged as if the site took part.
    return ev


def basis(
    sampling: str,
    cohort: float,
    n_sites: int,
    secret_cohort: bool,
    cohort_recorded: bool = False,
) -> dict[str, Any]:
    """How a run's client-level ε is accounted, for its record and report.

    Args:
        sampling: ``"poisson"`` or ``"fixed"``.
        cohort: cohort size (expected for Poisson).
        n_sites: configured population.
        secret_cohort: cohorts drawn from the privacy CSPRNG (not from the public seed).
        cohort_recorded: the record lists who took part each round
            (``privacy.record_cohorts``); the ledger then charged every round without
            amplification.

    Returns:
        ``{"neighbouring_relation", "sampling", "amplification", "amplified",
        "sampling_rate", "sensitivity", "cohorts_recorded",
        "amplification_holds_against_record_reader", "epsilon_holds_against_record_reader",
        "note"}``.

    Raises:
        ConfigError: see :func:`cohort_event`.
    """
    check_cohort(sampling, cohort, n_sites)
    q = cohort_rate(sampling, cohort, n_sites)
    full = q >= 1.0
    amp = "none (every site takes part)" if full else (
        f"Poisson subsampling, q = {q:.4g}" if sampling == "poisson" else (
            f"fixed-size cohort bounded by Poisson subsampling at q = m/N = {q:.4g} with "
            "doubled sensitivity (an added site displaces one)"
        )
    )
    sens = (
        "one site's clipped update" if sampling == "poisson" or full
        else "two sites' clipped updates (displacement)"
    )
    if cohort_recorded and not full:
        amp = (
            "none claimed: the record lists who took part (privacy.record_cohorts), so "
            "every round is charged as if the site took part"
        )
    # amplification holds against a reader of the record when the cohorts are secret and
    # unrecorded; the claimed ε also holds when no amplification is claimed at all
    holds = full or bool(secret_cohort and not cohort_recorded)
    eps_holds = holds or bool(cohort_recorded)
    if full:
        note = "no amplification is claimed"
    elif cohort_recorded:
        note = (
            "cohorts are recorded (privacy.record_cohorts = true): ε is charged without "
            "subsampling amplification, so it also holds against a reader of the record"
        )
    elif not secret_cohort:
        note = (
            "cohorts come from the public run seed: amplification is claimed only against "
            "an observer without the seed (set privacy.secure_rng = true)"
        )
    else:
        note = (
            "cohorts drawn from the privacy CSPRNG and not recorded (the record keeps only "
            "counts)"
        )
    return {
        "neighbouring_relation": RELATION,
        "sampling": sampling,
        "amplification": amp,
        "amplified": not (full or cohort_recorded),
        "cohorts_recorded": bool(cohort_recorded),
        "sampling_rate": 1.0 if full else q,
        "sensitivity": sens,
        "amplification_holds_against_record_reader": holds,
        "epsilon_holds_against_record_reader": eps_holds,
        "note": note,
    }
