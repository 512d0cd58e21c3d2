"""The direct stage link: SecAgg+'s protocol stages over veil's mutual TLS, beside Flower.

A deployed SecAgg+ round is five exchanges (train + advertise, share, masked input,
consistency, unmask). Over Flower each one travels ServerApp → SuperLink → SuperNode →
site executor and back, seconds per exchange whatever the protocol costs. With a stage
link the coordinator also listens on a TLS port (:class:`veil.transport.star.StarServer`)
and each site's executor dials out to it when the run's ``hello`` names the port: Flower
still starts the run, finds the sites and carries ``hello`` and ``train`` (the global
model, each site's reply with its first protocol message); the four later stages go over
the link, one request/reply per site and stage, with the same deadlines and the same
sans-IO protocol parties.

Who is who: a separate CA (``stage-ca.crt``, from :func:`write_stage_certs`) issues the
coordinator's certificate (party ``coordinator``) and one per site (``site-<id>``, the
site's id in the run). Each side checks the other's chain and name: a site talks only to
a certificate naming ``coordinator``; the coordinator takes site ``i``'s messages only from
a certificate naming ``site-i`` — a coordinator that redirects sites elsewhere, or a site
that claims another's id, fails the handshake (``tests/transport/test_star.py``). The CA key
is never written; keep the ``.key`` files on their own machines.

Flower run-config keys (the coordinator): ``stage-listen`` (``HOST:PORT`` to bind),
``stage-address`` (what the sites dial; default: the listen address), ``stage-cert``,
``stage-key``, ``stage-ca``. Node-config keys (each site): ``stage-cert``, ``stage-key``,
``stage-ca``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil.errors import ConfigError
from veil.transport.flower import Envelope, ExchangeStats
from veil.transport.sidechannels import OFF, SideChannels

__all__ = ["COORDINATOR", "StageLinkConfig", "StageLink", "site_party", "write_stage_certs",
           "dial_stage_link", "RUN_CONFIG_KEYS", "NODE_CONFIG_KEYS"]

#: the party name on the coordinator's certificate
COORDINATOR = "coordinator"
RUN_CONFIG_KEYS = ("stage-listen", "stage-address", "stage-cert", "stage-key", "stage-ca")
NODE_CONFIG_KEYS = ("stage-cert", "stage-key", "stage-ca")


def site_party(site: int | str) -> str:
    """The party name on site ``site``'s stage certificate."""
    return f"site-{int(site)}"


def _host_port(text: str, key: str) -> tuple[str, int]:
    host, _, port = str(text).rpartition(":")
    try:
        if not host or not 0 <= int(port) < 65536:
            raise ValueError
        return host.strip("[]"), int(port)
    except ValueError:
        raise ConfigError(f"{key} must be HOST:PORT, got {text!r}", key=key) from None


def write_stage_certs(
    directory: str | os.PathLike[str], sites: int, days: int = 365
) -> dict[str, Path]:
    """Write a fresh stage CA, the coordinator's certificate and one per site.

    Files: ``stage-ca.crt`` (to every machine), ``coordinator.crt``/``.key`` (to the
    coordinator), ``site-<i>.crt``/``.key`` for ``i`` in ``range(sites)`` (each pair to
    its site only; keys are mode 0600). The CA key is not written.

    Returns:
        name → path (``"ca"``, ``"coordinator"``, ``"coordinator-key"``, ``"site-0"``,
        ``"site-0-key"``...).

    Raises:
        ConfigError: ``sites < 1`` or a validity under one day.
    """
    from veil.crypto.certs import issue, make_ca, write_certificate, write_pem

    if sites < 1:
        raise ConfigError("a stage link needs at least one site", key="--stage-sites")
    if days < 1:
        raise ConfigError("certificate validity must be at least one day", key="--days")
    d = Path(directory)
    ca = make_ca("veil-stage-ca", days=days)
    out = {"ca": write_certificate(ca.cert, d / "stage-ca.crt")}
    for name in [COORDINATOR, *(site_party(i) for i in range(sites))]:
        crt, key = write_pem(issue(ca, name, days=days), d)
        out[name], out[f"{name}-key"] = crt, key
    return out


@dataclass(frozen=True)
class StageLinkConfig:
    """Where the coordinator listens and which certificate it presents.

    Attributes:
        listen: ``(host, port)`` to bind.
        address: ``HOST:PORT`` the sites dial (sent to them in ``hello``).
        cert, key, ca: the coordinator's certificate, its key and the stage CA (PEM paths).
    """

    listen: tuple[str, int]
    address: str
    cert: Path
    key: Path
    ca: Path

    @classmethod
    def from_run_config(cls, rc: Mapping[str, Any]) -> StageLinkConfig | None:
        """The link the Flower run config asks for (``None``: no ``stage-listen``).

        Raises:
            ConfigError: a key missing or malformed.
        """
        if not rc.get("stage-listen"):
            return None
        missing = [k for k in ("stage-cert", "stage-key", "stage-ca") if not rc.get(k)]
        if missing:
            raise ConfigError(f"a stage link needs {missing} in the run config "
                              "(files from `veil deploy certs --stage-sites N`)", key=missing[0])
        listen = _host_port(str(rc["stage-listen"]), "stage-listen")
        address = str(rc.get("stage-address") or rc["stage-listen"])
        _host_port(address, "stage-address")
        return cls(listen, address, Path(str(rc["stage-cert"])), Path(str(rc["stage-key"])),
                   Path(str(rc["stage-ca"])))


class StageLink:
    """The coordinator's end: :class:`~veil.transport.star.StarServer` keyed by site id.

    ``exchange`` takes and returns envelopes keyed by the site id as a string (as
    :class:`~veil.transport.flower.GridLink`), ``stats`` counts bytes per site id.

    Raises:
        ConfigError, OSError: unreadable certificates, or the port cannot be bound.
    """

    def __init__(self, cfg: StageLinkConfig, sites: Iterable[int],
                 side_channels: SideChannels = OFF) -> None:
        from veil.transport.star import StarServer

        self.config = cfg
        self._star = StarServer(cfg.listen, cfg.cert, cfg.key, cfg.ca,
                                parties=[site_party(i) for i in sites],
                                side_channels=side_channels)
        self.stats = ExchangeStats()

    @property
    def address(self) -> str:
        """``HOST:PORT`` the sites dial."""
        if self.config.listen[1] == 0:  # bound to any free port: say which
            return f"{self.config.listen[0]}:{self._star.address[1]}"
        return self.config.address

    def wait_for(self, sites: Iterable[str], timeout_s: float) -> set[str]:
        """The site ids (strings) connected by ``timeout_s``."""
        got = self._star.wait_for([site_party(s) for s in sites], timeout_s)
        return {p.removeprefix("site-") for p in got}

    def exchange(self, outgoing: Mapping[str, Envelope], timeout_s: float
                 ) -> dict[str, Envelope]:
        """As :meth:`veil.transport.flower.GridLink.exchange`, over the link."""
        star = self._star
        replies = star.exchange({site_party(p): e for p, e in outgoing.items()}, timeout_s)
        for side in ("bytes_up", "bytes_down"):
            mine = getattr(self.stats, side)
            for party, n in getattr(star.stats, side).items():
                mine[party.removeprefix("site-")] = n
        self.stats.exchanges = star.stats.exchanges
        self.stats.seconds = star.stats.seconds
        return {p.removeprefix("site-"): e for p, e in replies.items()}

    def close(self) -> None:
        """Stop listening and close every site's connection."""
        self._star.close()


def dial_stage_link(node_config: Mapping[str, Any], site: int, address: str) -> Any:
    """Site side: connect to the coordinator's stage link (a :class:`StarClient`).

    Raises:
        ConfigError: the node config lacks the site's stage certificate, key or CA, or
            the certificate does not name ``site-<site>``.
        IntegrityError, PeerError, PeerTimeoutError: the coordinator's certificate does
            not name ``coordinator`` (or is from another CA), or it cannot be reached.
    """
    from veil.transport.star import StarClient

    missing = [k for k in NODE_CONFIG_KEYS if not node_config.get(k)]
    if missing:
        raise ConfigError(
            f"the coordinator runs the protocol stages over a direct TLS link; this site's "
            f"node config needs {missing} (its files from `veil deploy certs --stage-sites`)",
            key=f"node-config.{missing[0]}",
        )
    return StarClient(_host_port(address, "stage-address"), Path(str(node_config["stage-cert"])),
                      Path(str(node_config["stage-key"])), Path(str(node_config["stage-ca"])),
                      site_party(site), server_name=COORDINATOR, connect_timeout_s=30.0)
