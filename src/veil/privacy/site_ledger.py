"""A site's own sample-level ledger: what DP-SGD spent on that site's examples.

Only the site knows how many examples it holds; its ledger is built from its own round
event (:meth:`veil.training.Trainer.round_event` at its own size), vets its own plan,
charges each round it trains in and reports only its ε. The server (and the run's
:class:`~veil.privacy.setup.PrivacyHook`) sees the reported ε, never the size.

Its events say how often the site took part, which client-level DP with hidden cohorts
hides: a simulation checkpoints it in the site's own file
(``RUN/sites/<id>/state-<round>.pt``, :mod:`veil.federation.checkpoint`), never in the
server's ``checkpoint.pt``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dp_accounting import dp_event as dpe

from veil.errors import ConfigError
from veil.privacy.accounting import epsilon
from veil.privacy.config import PrivacyConfig
from veil.privacy.ledger import PrivacyLedger

__all__ = ["SiteLedger"]

_ME = "site"


class SiteLedger:
    """Sample-level ε of one site.

    Args:
        cfg: privacy settings (δ, accountant).
        round_event: the DP event one round of local DP-SGD spends at this site.
        n_examples: the site's size (stays in this object).
    """

    def __init__(self, cfg: PrivacyConfig, round_event: dpe.DpEvent, n_examples: int) -> None:
        self.cfg = cfg
        self.round_event = round_event
        self._n = int(n_examples)
        self.ledger = PrivacyLedger(cfg.delta, cfg.accountant)

    def __repr__(self) -> str:
        return f"SiteLedger(ε={self.epsilon():.3f})"

    def planned(self, rounds: int) -> float:
        """ε after ``rounds`` rounds in which this site trains every time."""
        ev = dpe.SelfComposedDpEvent(self.round_event, int(rounds))
        return epsilon(ev, self.cfg.delta, self.cfg.accountant)

    def vet(self) -> None:
        """Check δ against this site's size.

        Raises:
            ConfigError: δ is not below 1 / (the site's number of examples).
        """
        if self.cfg.delta >= 1.0 / self._n:
            raise ConfigError(
                f"delta={self.cfg.delta} is not below 1/(smallest site size {self._n}); "
                "lower privacy.delta",
                key="privacy.delta",
            )

    def next_epsilon(self) -> float:
        """ε if this site trains one more round."""
        return self.ledger.epsilon_if(_ME, self.round_event)

    def charge(self) -> None:
        """Record one round of local DP-SGD."""
        self.ledger.spend(_ME, self.round_event)
        self.ledger.prune()

    def epsilon(self) -> float:
        """ε(δ) spent so far (what the site reports)."""
        return self.ledger.epsilon(_ME)

    def state_dict(self) -> dict[str, Any]:
        """The ledger's events (JSON)."""
        return self.ledger.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replay the ledger from a checkpoint."""
        self.ledger = PrivacyLedger(self.cfg.delta, self.cfg.accountant)
        self.ledger.load_state_dict(state)
