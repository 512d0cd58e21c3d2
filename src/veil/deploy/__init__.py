"""The same veil run across machines: Flower's SuperLink and SuperNodes as the transport.

* :mod:`veil.deploy.apps` — the Flower ServerApp / ClientApp (needs ``veil[flower]``);
* :mod:`veil.deploy.server` — the coordinator's rounds over the Grid;
* :mod:`veil.deploy.site` / :mod:`veil.deploy.agent` — a site's runtime, kept in the site
  agent's memory beside its SuperNode;
* :mod:`veil.deploy.processes` / :mod:`veil.deploy.local` — starting and stopping Flower's
  processes, submitting runs; :class:`LocalDeployment` runs a whole deployment on loopback;
* :mod:`veil.deploy.tls` — the CA and the SuperLink's certificate.

Guide: docs/deployment.md. Importing this package imports neither Flower nor torch.
"""

from veil.deploy.local import LocalDeployment, read_result

__all__ = ["LocalDeployment", "read_result"]
