"""What sites sign and commit to in the malicious-server mode of SecAgg+.

Every statement is a SHA-256 over length-prefixed fields (:func:`veil.crypto.identity.sha256`)
starting with a purpose label, the run's session id and the round, so a signature from
one purpose, run or round never verifies in another (no replay, no cross-protocol use).

* advertisement: (session, round, site, enc_pk, mask_pk, commitment to b_u) — binds the
  keys to the enrolled site (no key substitution, no Sybil keys, no replay);
* advertisement digest: hash of the statement and its signature, the leaf that enters the
  joint graph seed;
* survivor list: (session, round, sorted U3) — a site signs the one list it received;
* seed commitment: hash of (session, round, site, b_u); b_u is 32 uniform bytes, so the
  commitment hides it, and the server checks every rebuilt b_u against it.
"""

from __future__ import annotations

from collections.abc import Iterable

from veil.crypto.identity import sha256

__all__ = ["advert_statement", "advert_digest", "survivors_statement", "seed_commitment"]


def _head(label: bytes, session: bytes, round: int) -> tuple[bytes, bytes, bytes]:
    return label, session, round.to_bytes(4, "little")


def advert_statement(
    session: bytes, round: int, site: int, enc_pk: bytes, mask_pk: bytes, commit: bytes
) -> bytes:
    """The bytes a site signs when it advertises its keys."""
    return sha256(*_head(b"veil/secagg/v2/advertise", session, round),
                  site.to_bytes(4, "little"), enc_pk, mask_pk, commit)


def advert_digest(statement: bytes, signature: bytes) -> bytes:
    """Digest of one signed advertisement (enters the joint graph seed)."""
    return sha256(b"veil/secagg/v2/advert-digest", statement, signature)


def survivors_statement(session: bytes, round: int, survivors: Iterable[int]) -> bytes:
    """The bytes a site signs to vouch for the survivor list it received."""
    ids = sorted(int(u) for u in survivors)
    return sha256(*_head(b"veil/secagg/v2/survivors", session, round),
                  b"".join(u.to_bytes(4, "little") for u in ids))


def seed_commitment(session: bytes, round: int, site: int, seed: bytes) -> bytes:
    """Commitment to a site's self-mask seed b_u."""
    return sha256(*_head(b"veil/secagg/v2/seed", session, round), site.to_bytes(4, "little"),
                  seed)
