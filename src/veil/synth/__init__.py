"""DP synthetic tabular data: marginal-based generators (private-pgm's ``mbi``), per site.

Public API::

    from veil.synth import NumericColumn, CategoricalColumn, TableSchema
    from veil.synth import SynthSettings, synthesize, synthesize_sites

The whole ``veil synth`` run (with evaluation and report) is
:func:`veil.cli.cmd_synth.run_synth`.

Needs the ``synth`` extra (``pip install -e '.[synth]'``: mbi and a CPU jax). Names are
imported lazily so that ``import veil.synth`` is cheap and works without the extra; the
generator raises :class:`veil.errors.ConfigError` naming the extra when it is missing.
See docs/synthetic-data.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "NumericColumn": "schema",
    "CategoricalColumn": "schema",
    "TableSchema": "schema",
    "Table": "schema",
    "SynthSettings": "api",
    "SyntheticRelease": "api",
    "synthesize": "api",
    "synthesize_sites": "api",
    "plan_for": "api",
    "MECHANISMS": "mechanisms",
    "load_synth_config": "config",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"veil.synth.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'veil.synth' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
