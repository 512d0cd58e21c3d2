"""The typed Python API: one DP synthetic table per data set or per site.

Example::

    from veil.synth import SynthSettings, synthesize
    release = synthesize(table, schema, SynthSettings(epsilon=1.0, delta=1e-5))
    release.table        # dict column -> array, the synthetic records
    release.epsilon      # ε(δ) from the privacy ledger (dp-accounting)

Several sites: :func:`synthesize_sites` runs one synthesis per site on that site's own
table with that site's budget; each site is its own ledger entity (``site:<id>``), so
ε is per site's records and no pooled data ever exists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from veil.crypto.prg import SecureRng
from veil.errors import ConfigError
from veil.privacy.ledger import PrivacyLedger
from veil.synth.mechanisms import (
    ACCOUNTANT,
    MECHANISMS,
    MechanismPlan,
    plan_fixed,
    plan_mst,
    run_mechanism,
)
from veil.synth.schema import Table, TableSchema, n_rows

__all__ = ["SynthSettings", "SyntheticRelease", "synthesize", "synthesize_sites", "plan_for"]


@dataclass(frozen=True)
class SynthSettings:
    """How to synthesise.

    Attributes:
        epsilon: record-level ε budget at ``delta`` (add-or-remove-one record).
        delta: δ.
        mechanism: ``"mst"`` (a spanning tree chosen privately), ``"aim"`` (pairs chosen
            round by round, as many rounds as columns) or ``"fixed"`` (public cliques).
        cliques: for ``fixed``: lists of column names, or ``"label_pairs"`` for every
            column paired with the label.
        sensitive: columns whose measurements get ``sensitive_noise_factor`` times the
            noise (a stricter attribute-level ε for them; see docs/synthetic-data.md).
        sensitive_noise_factor: ≥ 1.
        rows: synthetic rows (default: the model's noisy estimate of the real count).
        iters: ``mbi`` estimation iterations.
        seed: seeds the ML randomness (sampling records from the model, values inside
            bins). Privacy noise always comes from a CSPRNG.
        reproducible_noise: derive the noise CSPRNG from ``seed`` (tests only; a real
            release must keep this ``False``).
    """

    epsilon: float
    delta: float = 1e-5
    mechanism: Literal["mst", "aim", "fixed"] = "mst"
    cliques: Sequence[Sequence[str]] | str | None = None
    sensitive: Sequence[str] = ()
    sensitive_noise_factor: float = 1.0
    rows: int | None = None
    iters: int = 1000
    seed: int = 0
    reproducible_noise: bool = False

    def __post_init__(self) -> None:
        if not (self.epsilon > 0 and np.isfinite(self.epsilon)):
            raise ConfigError(f"epsilon must be finite and > 0, got {self.epsilon}",
                              key="synth.epsilon")
        if not 0 < self.delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta}", key="synth.delta")
        if self.mechanism not in MECHANISMS:
            raise ConfigError(f"mechanism must be one of {MECHANISMS}, got {self.mechanism!r}",
                              key="synth.mechanism")
        if self.mechanism == "fixed" and not self.cliques:
            raise ConfigError("the fixed mechanism needs cliques (a list, or 'label_pairs')",
                              key="synth.cliques")
        if not self.sensitive_noise_factor >= 1.0:
            raise ConfigError("sensitive_noise_factor must be >= 1",
                              key="synth.sensitive_noise_factor")
        if self.rows is not None and self.rows < 1:
            raise ConfigError("rows must be >= 1", key="synth.rows")
        if self.iters < 1:
            raise ConfigError("iters must be >= 1", key="synth.iters")


@dataclass
class SyntheticRelease:
    """One DP synthetic table and what it cost.

    Attributes:
        table: the synthetic records (column -> array), values in data units.
        codes: the same records as discrete codes.
        schema: the public schema.
        settings: the settings used.
        entity: the ledger entity charged (``"dataset"`` or ``"site:<id>"``).
        ledger: the privacy ledger (record-level entity + ``attribute:<col>`` entities).
        cliques: marginals the generator was fitted to.
        info: mechanism details (e.g. the pairs MST selected).
    """

    table: Table
    codes: Table
    schema: TableSchema
    settings: SynthSettings
    entity: str
    ledger: PrivacyLedger
    cliques: list[tuple[str, ...]]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def epsilon(self) -> float:
        """Record-level ε(δ) from the ledger."""
        return self.ledger.epsilon(self.entity)

    @property
    def delta(self) -> float:
        """δ of :attr:`epsilon`."""
        return self.ledger.delta

    def attribute_epsilon(self) -> dict[str, float]:
        """Column -> ε(δ) when only that column's value of one record may change."""
        pre = f"{self.entity}/attribute:"
        return {e[len(pre):]: self.ledger.epsilon(e) for e in self.ledger.entities()
                if e.startswith(pre)}

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description of the release (no records)."""
        return {
            "entity": self.entity,
            "mechanism": self.settings.mechanism,
            "target_epsilon": self.settings.epsilon,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "accountant": ACCOUNTANT,
            "attribute_epsilon": self.attribute_epsilon(),
            "rows": n_rows(self.table),
            "cliques": [list(c) for c in self.cliques],
            "sensitive": list(self.settings.sensitive),
            "sensitive_noise_factor": self.settings.sensitive_noise_factor,
            "seed": self.settings.seed,
            "schema": self.schema.to_dict(),
            **self.info,
        }


def _cliques(schema: TableSchema, settings: SynthSettings) -> list[list[str]]:
    if settings.cliques == "label_pairs":
        if schema.label is None:
            raise ConfigError("'label_pairs' needs a label column", key="synth.cliques")
        return [[n, schema.label] for n in schema.names if n != schema.label]
    if isinstance(settings.cliques, str):
        raise ConfigError(f"unknown clique preset {settings.cliques!r}", key="synth.cliques")
    return [list(c) for c in settings.cliques or []]


def plan_for(schema: TableSchema, settings: SynthSettings) -> MechanismPlan:
    """The data-independent plan (noise scales, selections) meeting the settings' budget.

    Raises:
        ConfigError: invalid settings or a budget no noise level meets.
    """
    factors = {c: settings.sensitive_noise_factor for c in settings.sensitive}
    if settings.mechanism == "mst":
        return plan_mst(schema.sizes, settings.epsilon, settings.delta, factors)
    if settings.mechanism == "aim":
        from veil.synth.aim import plan_aim

        return plan_aim(schema.sizes, settings.epsilon, settings.delta, factors)
    return plan_fixed(schema.sizes, _cliques(schema, settings), settings.epsilon,
                      settings.delta, factors)


def synthesize(table: Mapping[str, np.ndarray], schema: TableSchema, settings: SynthSettings,
               *, ledger: PrivacyLedger | None = None, entity: str = "dataset",
               rng: SecureRng | None = None) -> SyntheticRelease:
    """A DP synthetic version of ``table`` at ``settings.epsilon`` (record level).

    Args:
        table: the private table (column -> array); columns outside the schema are
            ignored (they are not released).
        schema: the public schema (ranges, categories).
        settings: budget and mechanism.
        ledger: a ledger to charge (a fresh one at ``settings.delta`` by default).
        entity: the ledger entity that is charged.
        rng: CSPRNG for noise and selections (fresh from the OS by default).

    Returns:
        The release; its :attr:`~SyntheticRelease.epsilon` is read from the ledger.

    Raises:
        ConfigError: bad settings or schema; the ``synth`` extra is missing.
        DataError: the table does not fit the schema.
        BudgetExceededError: never — the plan is calibrated to the budget first.
    """
    codes = schema.encode(table)
    n_rows(codes)
    plan = plan_for(schema, settings)
    led = ledger or PrivacyLedger(settings.delta, ACCOUNTANT)
    if led.delta != settings.delta:
        raise ConfigError("the ledger's delta differs from the settings' delta",
                          key="synth.delta")
    if rng is None:
        rng = (SecureRng.from_seed(settings.seed, f"synth/{entity}")
               if settings.reproducible_noise else SecureRng.fresh())
    # Charge first: the budget is spent as soon as the data are measured.
    led.spend(entity, plan.record_event())
    for c in schema.names:
        led.spend(f"{entity}/attribute:{c}", plan.attribute_event(c))
    res = run_mechanism(codes, schema.sizes, plan, rng, iters=settings.iters)
    syn_codes = _sample(res.model, settings.rows, settings.seed)
    syn_codes = {c: np.asarray(syn_codes[c], dtype=np.int64) for c in schema.names}
    values = schema.decode(syn_codes, np.random.default_rng(settings.seed))
    return SyntheticRelease(values, syn_codes, schema, settings, entity, led, res.cliques,
                            res.info)


def _sample(model: Any, rows: int | None, seed: int) -> dict[str, np.ndarray]:
    """Records from the model; mbi samples with NumPy's global generator, so it is seeded
    for the call and restored afterwards (ML randomness, post-processing)."""
    state = np.random.get_state()
    try:
        np.random.seed(seed % 2**32)
        return dict(model.synthetic_data(rows=rows).to_dict())
    finally:
        np.random.set_state(state)


def synthesize_sites(tables: Mapping[str, Mapping[str, np.ndarray]], schema: TableSchema,
                     settings: SynthSettings | Mapping[str, SynthSettings], *,
                     ledger: PrivacyLedger | None = None) -> dict[str, SyntheticRelease]:
    """Per-site synthesis: each site's own table at its own budget.

    Args:
        tables: site id -> that site's private table.
        schema: the shared public schema.
        settings: one setting for all sites, or site id -> settings (all with one δ).
        ledger: shared ledger; each site is charged as entity ``site:<id>``.

    Raises:
        ConfigError: settings missing for a site, or sites with different δ.
    """
    per = (dict(settings) if isinstance(settings, Mapping)
           else {s: settings for s in tables})
    missing = [s for s in tables if s not in per]
    if missing:
        raise ConfigError(f"no synth settings for sites {missing}", key="synth.sites")
    deltas = {per[s].delta for s in tables}
    if len(deltas) != 1:
        raise ConfigError("all sites must use one delta", key="synth.delta")
    led = ledger or PrivacyLedger(deltas.pop(), ACCOUNTANT)
    return {s: synthesize(t, schema, per[s], ledger=led, entity=f"site:{s}")
            for s, t in tables.items()}
