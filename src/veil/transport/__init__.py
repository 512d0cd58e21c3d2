"""Moving protocol bytes between parties, and the clock.

* :mod:`veil.transport.channel` — the :class:`Channel` protocol (one party's view of a
  network) and :class:`InProcessNetwork`.
* :mod:`veil.transport.tcp` — TCP with mutual TLS 1.3 between OS processes
  (:func:`connect_mesh`).
* :mod:`veil.transport.driver` — the in-process driver that runs n sans-IO parties to
  completion with stage deadlines (``drive``) and the :class:`Party` interface it drives.
* :mod:`veil.transport.loop` — ``run_party``: one party's loop over a :class:`Channel`
  (one OS process per party), the clock-owning party closing stages on wall-clock deadlines.
* :mod:`veil.transport.sidechannels` — :class:`SideChannels`, the policy both loops take:
  fixed deadlines with shuffled delivery to the server, random site delays.

Nothing here knows any protocol: parties are opaque machines with one interface.
Submodules are imported on use (no work at import time).
"""

from veil.transport.channel import Channel, InProcessNetwork
from veil.transport.driver import Party

__all__ = ["Channel", "InProcessNetwork", "Party"]
