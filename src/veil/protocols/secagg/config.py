"""Public parameters of one SecAgg+ round, known to the server and every site."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from veil.crypto.identity import Roster, sha256
from veil.errors import ConfigError, InsecureParametersError, ProtocolError
from veil.protocols.secagg.graph import neighbours, neighbours_of, ring_order

__all__ = ["SecAggConfig", "SERVER_ID", "SERVER", "site_name", "site_of"]

#: Sender id the server uses in message headers (sites use their own ids).
SERVER_ID = 0xFFFFFFFF
#: The server's party name on a transport (site u is ``str(u)``).
SERVER = "server"


def site_name(site: int) -> str:
    """Party name of site ``site`` on a transport."""
    return str(int(site))


def site_of(name: str) -> int:
    """Site id of the party called ``name``.

    Raises:
        ProtocolError: if ``name`` is not a site's party name.
    """
    if not isinstance(name, str) or not name.isdigit() or name != str(int(name)):
        raise ProtocolError("sender is not a site of this protocol", peer=name)
    return int(name)


@dataclass(frozen=True)
class SecAggConfig:
    """Parameters of one round.

    Attributes:
        round: round number (bound into every message, key and ciphertext).
        site_ids: the cohort (distinct ids in ``0 .. 2**32 − 2``).
        dim: length d of each input vector.
        bits: ring width b (inputs and sums live in Z_{2^b}).
        k: neighbours per site (≥ n − 1: classic SecAgg with the complete graph).
        threshold: t shares needed to rebuild a secret; must exceed k/2.
        graph_seed: public 32-byte seed of the neighbour graph for this round (semi-honest
            mode only; in the malicious-server mode the seed is derived from the signed key
            advertisements, :meth:`joint_graph_seed`).
        roster: the enrolled sites' Ed25519 keys; setting it selects the malicious-server
            mode (signed advertisements and survivor lists, seed commitments, joint graph).
        session: 32-byte id of the run (bound into every signature with the round); must
            be fresh per run so that nothing signed in one run can be replayed in another.
        pad_messages: pad every message to the largest size of its type in this round
            (:meth:`veil.protocols.secagg.messages.Message.bound`), so message sizes are
            the same for every site, whatever the dropouts or the data.
    """

    round: int
    site_ids: tuple[int, ...]
    dim: int
    bits: int
    k: int
    threshold: int
    graph_seed: bytes = field(default=b"\x00" * 32, repr=False)
    roster: Roster | None = field(default=None, repr=False, hash=False)
    session: bytes = field(default=b"\x00" * 32, repr=False)
    pad_messages: bool = False

    def __post_init__(self) -> None:
        ids = tuple(sorted(int(i) for i in self.site_ids))
        object.__setattr__(self, "site_ids", ids)
        n = len(ids)
        if n < 2 or len(set(ids)) != n or ids[0] < 0 or ids[-1] >= SERVER_ID:
            raise ConfigError("site_ids must hold ≥ 2 distinct ids in 0..2**32-2")
        if not 0 <= self.round < 2**32:
            raise ConfigError("round must be in 0..2**32-1")
        if not 1 <= self.dim <= 2**28:
            raise ConfigError("dim must be in 1..2**28")
        if not 1 <= self.bits <= 64:
            raise ConfigError("bits must be in 1..64")
        if len(self.graph_seed) != 32:
            raise ConfigError("graph_seed must be 32 bytes")
        if len(self.session) != 32:
            raise ConfigError("session must be 32 bytes")
        if self.roster is not None:
            missing = [u for u in ids if u not in self.roster]
            if missing:
                raise ConfigError(f"sites {missing[:5]} are not enrolled in the roster")
        k = min(int(self.k), n - 1)
        object.__setattr__(self, "k", k)
        if k < n - 1 and (k < 2 or k % 2):
            raise ConfigError(f"k must be even (or ≥ n − 1 = {n - 1}), got {k}")
        if not k // 2 < self.threshold <= k:
            raise InsecureParametersError(
                f"threshold must satisfy k/2 < t ≤ k (k={k}), got {self.threshold}: with "
                "t ≤ k/2 a server could collect both secrets of a site from disjoint holders"
            )

    @property
    def n(self) -> int:
        """Cohort size."""
        return len(self.site_ids)

    @property
    def malicious(self) -> bool:
        """Whether this round runs the malicious-server mode (a roster is pinned)."""
        return self.roster is not None

    @property
    def complete(self) -> bool:
        """Whether this is classic SecAgg (every pair of sites are neighbours)."""
        return self.k >= self.n - 1

    @cached_property
    def _ring(self) -> tuple[list[int], dict[int, int]]:
        ring = ring_order(self.site_ids, self.graph_seed)
        return ring, {u: i for i, u in enumerate(ring)}

    def neighbours_of(self, site: int) -> frozenset[int]:
        """Neighbours of one site (self excluded).

        Raises:
            ConfigError: if ``site`` is not in the cohort.
        """
        ring, pos = self._ring
        if site not in pos:
            raise ConfigError(f"site {site} is not in this round's cohort")
        return neighbours_of(ring, pos[site], self.k)

    def graph(self, seed: bytes | None = None) -> dict[int, frozenset[int]]:
        """Neighbours of every site (for ``seed``, default :attr:`graph_seed`)."""
        return _graph(self.site_ids, self.k, self.graph_seed if seed is None else seed)

    def joint_graph_seed(self, digests: Sequence[tuple[int, bytes]]) -> bytes:
        """The graph seed of a malicious-mode round: a hash of the session, the round and
        the digests of every signed key advertisement the server accepted (sorted by site).

        The seed exists only once every key is committed, so nobody can know a round's graph
        before its keys are fixed; see docs/secure-aggregation.md for the grinding bound.
        """
        return sha256(
            b"veil/secagg/v2/graph", self.session, self.round.to_bytes(4, "little"),
            *(u.to_bytes(4, "little") + d for u, d in digests),
        )


@lru_cache(maxsize=8)
def _graph(ids: tuple[int, ...], k: int, seed: bytes) -> dict[int, frozenset[int]]:
    return neighbours(ids, k, seed)
