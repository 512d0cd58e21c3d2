"""Privacy randomness streams, one per (label, round, site).

Every random draw that protects privacy (Poisson sampling and noise in DP-SGD, stochastic
rounding and noise in the aggregation stages) comes from a :class:`veil.crypto.SecureRng`
obtained here. A site owns its streams: in a deployment they are fresh OS-keyed streams
(:class:`FreshStreams`); a reproducible simulation derives them with HKDF from the run
seed, the label, the round and the site id (:class:`SeededStreams`), so a site's draws
never depend on which other sites are in the cohort.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from veil.crypto.prg import SecureRng

__all__ = ["PrivacyStreams", "FreshStreams", "SeededStreams"]


@runtime_checkable
class PrivacyStreams(Protocol):
    """Where a site's privacy randomness comes from."""

    def stream(self, label: str, round: int, site: int) -> SecureRng:
        """The CSPRNG stream for ``label`` (e.g. ``"dpsgd/noise"``) in ``round`` at ``site``."""
        ...


class FreshStreams:
    """Fresh OS-keyed streams (the default for real runs: nothing to reproduce from)."""

    def stream(self, label: str, round: int, site: int) -> SecureRng:
        """A new stream keyed from the OS's entropy."""
        return SecureRng.fresh()

    def __repr__(self) -> str:
        return "FreshStreams()"


class SeededStreams:
    """Streams derived from a seed (reproducible simulation; not secret against its holder).

    Args:
        seed: the run seed.
    """

    def __init__(self, seed: int) -> None:
        self._seed = int(seed)

    def stream(self, label: str, round: int, site: int) -> SecureRng:
        """HKDF(seed, ``"{label}/r{round}/s{site}"``)."""
        return SecureRng.from_seed(self._seed, f"{label}/r{int(round)}/s{int(site)}")

    def __repr__(self) -> str:
        return "SeededStreams(<seed>)"
