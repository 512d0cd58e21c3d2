"""What a round's timing and order may tell the party that owns the clock: the policy.

A server that acts on each message as it arrives shows, in what it does and when, who
answered first; a server that processes messages in arrival order lets that order into its
state. :class:`SideChannels` is the transports' policy against both
(:func:`veil.transport.driver.drive`, :func:`veil.transport.loop.run_party`):

* ``fixed_deadlines`` — the clock-owning party (a server) acts **only at stage
  deadlines**: every message that arrives during a stage is held by the transport, and at
  the deadline — never earlier, even when every awaited peer has answered — the held
  messages are handed to the party in a shuffled order, then the stage closes
  (``on_deadline``). What the party sees (its calls, their order, their time within the
  stage) is then the same whoever answered first, and every stage lasts its full deadline.
* the shuffle (:meth:`SideChannels.order`) — held messages are first put in a canonical
  order (by sender name; one sender's messages keep their order) and the senders are then
  permuted by a CSPRNG (:class:`secrets.SystemRandom` unless a test passes another
  ``shuffle``), so the order is a function of *which* messages arrived and fresh
  randomness, never of when they arrived. Sender names stay visible (SecAgg+ needs each
  contribution's id to unmask).
* ``site_delay_s`` — every other party (a site) waits a CSPRNG-drawn time, uniform in
  ``[0, site_delay_s)``, before it sends what a message made it queue, blurring the link
  between its compute time and its arrival time for anyone who watches the network (the
  server's own sockets included, which no transport policy can hide). A delay counts
  against the site's own stage deadline: keep it well below the deadline.

Message sizes are the protocols' business (:mod:`veil.protocols.padding`,
``SecAggConfig.pad_messages``): a transport moves opaque bytes.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from veil.errors import ConfigError

__all__ = ["SideChannels", "Shuffle", "OFF"]

#: shuffle(list) permutes the list in place
Shuffle = Callable[[list[Any]], None]
T = TypeVar("T")


def _csprng_shuffle() -> Shuffle:
    return secrets.SystemRandom().shuffle


@dataclass(frozen=True)
class SideChannels:
    """The transports' side-channel policy (see the module docstring).

    Attributes:
        fixed_deadlines: the clock-owning party acts only at stage deadlines, on the
            stage's messages in shuffled order.
        site_delay_s: upper end of each site's random send delay (0: none).
        shuffle: permutes the senders in place (default: :class:`secrets.SystemRandom`;
            tests may pass a seeded one to compare two runs' orders exactly).

    Raises:
        ConfigError: a negative or non-finite ``site_delay_s``.
    """

    fixed_deadlines: bool = False
    site_delay_s: float = 0.0
    shuffle: Shuffle = field(default_factory=_csprng_shuffle, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.site_delay_s) and self.site_delay_s >= 0):
            raise ConfigError(
                f"site_delay_s must be a finite number ≥ 0, got {self.site_delay_s!r}"
            )

    @property
    def active(self) -> bool:
        """Whether any protection is on."""
        return self.fixed_deadlines or self.site_delay_s > 0

    def order(self, held: Sequence[tuple[str, T]]) -> list[tuple[str, T]]:
        """``held`` messages ``(sender, message)`` in canonical-then-shuffled order.

        Grouped by sender (sorted by name, each sender's messages in their order), then
        the groups are permuted with :attr:`shuffle`: the result does not depend on the
        order of ``held``.
        """
        groups: dict[str, list[tuple[str, T]]] = {}
        for msg in held:
            groups.setdefault(msg[0], []).append(msg)
        senders = sorted(groups)
        self.shuffle(senders)
        return [msg for s in senders for msg in groups[s]]

    def delay(self) -> float:
        """A fresh send delay in seconds, uniform in ``[0, site_delay_s)`` (CSPRNG)."""
        if self.site_delay_s <= 0:
            return 0.0
        return secrets.SystemRandom().random() * self.site_delay_s


#: no protection (the transports' default)
OFF = SideChannels()
