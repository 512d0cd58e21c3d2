"""A site: its own data, its own privacy randomness, its own stage state and ledger.

A :class:`Site` holds what never leaves it: its examples, the CSPRNG streams its privacy
randomness comes from (DP-SGD sampling and noise, stochastic rounding, distributed noise),
its own state of every pipeline stage (error feedback, keys), which survives from round to
round, and its own sample-level privacy ledger (it reports its ε, never its size). The server never reads a site's size or state; the simulation trains many
sites' rows at once (:class:`~veil.federation.simulation.Simulation`) with each site's row
computed from that site's own data, streams and state only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from veil.crypto.prg import SecureRng
from veil.training import FreshStreams, PrivacyStreams, SeededStreams

__all__ = ["Site", "SiteStreams"]


class Site:
    """One site of a federation.

    Args:
        site_id: the site's public id.
        x: its training features.
        y: its training labels.
        streams: its privacy randomness (fresh OS-keyed, or seed-derived in a reproducible
            simulation: then keyed by the site id, so no two sites share a stream).
        stage_state: its initial state of every pipeline stage.
        ledger: its own sample-level ledger (a :class:`veil.privacy.SiteLedger`), if the
            run uses DP-SGD.
    """

    def __init__(
        self,
        site_id: int,
        x: np.ndarray,
        y: np.ndarray,
        streams: PrivacyStreams,
        stage_state: tuple[Any, ...] = (),
        ledger: Any = None,
    ) -> None:
        self.site_id = int(site_id)
        self.x = x
        self.y = y
        self.streams = streams
        self.stage_state = stage_state
        self.ledger = ledger

    def __repr__(self) -> str:  # the data and streams stay private
        return f"Site({self.site_id})"

    @property
    def n_examples(self) -> int:
        """How many examples the site holds (known to the site only)."""
        return len(self.y)

    def stream(self, label: str, round: int) -> SecureRng:
        """This site's privacy stream for ``label`` in ``round``."""
        return self.streams.stream(label, round, self.site_id)

    def epsilon(self) -> float | None:
        """The sample-level ε this site reports (``None`` without DP-SGD)."""
        return None if self.ledger is None else float(self.ledger.epsilon())

    def state_dict(self) -> dict[str, Any]:
        """The site's stage state and ledger (for checkpoints)."""
        return {
            "stage_state": self.stage_state,
            "ledger": None if self.ledger is None else self.ledger.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the stage state and ledger."""
        self.stage_state = tuple(state["stage_state"])
        if self.ledger is not None and state.get("ledger") is not None:
            self.ledger.load_state_dict(state["ledger"])


class SiteStreams:
    """Dispatches a trainer's stream requests to each site's own streams.

    Args:
        sites: the sites, indexed by id.
    """

    def __init__(self, sites: Sequence[Site]) -> None:
        self._sites = sites

    def stream(self, label: str, round: int, site: int) -> SecureRng:
        """Site ``site``'s own stream."""
        return self._sites[int(site)].stream(label, round)


def site_streams(secure_rng: bool, seed: int) -> PrivacyStreams:
    """A site's privacy streams: fresh OS entropy, or derived from the run seed."""
    return FreshStreams() if secure_rng else SeededStreams(seed)
