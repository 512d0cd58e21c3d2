"""The same veil run across machines: Flower's SuperLink and SuperNodes as the transport.

* :mod:`veil.deploy.apps` — the Flower ServerApp / ClientApp (needs ``veil[flower]``);
* :mod:`veil.deploy.parts` — veil's Server and Site built from each side's own copy of
  the run config (``federation.transport = "flower"``), as the simulation builds them;
* :mod:`veil.deploy.server` — the coordinator's rounds over the Grid;
* :mod:`veil.deploy.site` — a site's runtime (its own data, checks of every round against
  its own config);
* :mod:`veil.deploy.executor` — the long-lived site executor beside each SuperNode (the
  default), :mod:`veil.deploy.agent` — the site agent behind Flower's per-message
  ClientApp (``isolation = "subprocess"``);
* :mod:`veil.deploy.processes` / :mod:`veil.deploy.local` — starting and stopping Flower's
  processes, submitting runs; :class:`LocalDeployment` runs a whole deployment on loopback;
* :mod:`veil.deploy.tls` — the CA and the SuperLink's certificate.

Guide: docs/deployment.md. Importing this package imports neither Flower nor torch.
"""

from veil.deploy.local import LocalDeployment, read_result

__all__ = ["LocalDeployment", "read_result"]
