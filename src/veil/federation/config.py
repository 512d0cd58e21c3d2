"""Validated run configuration (TOML → typed object).

Every key is declared here with its type, default, bounds and a one-line description;
unknown keys, wrong types and impossible values raise :class:`veil.errors.ConfigError`
naming the key and how to fix it. ``veil train --help`` prints :func:`describe_keys`.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from veil.data.schema import Schema
from veil.data.sites import SiteSource
from veil.errors import ConfigError
from veil.federation.buffered_config import BufferedConfig, check_buffered
from veil.privacy.config import PrivacyConfig

__all__ = [
    "RunConfig",
    "DataConfig",
    "ModelConfig",
    "LocalTrainingConfig",
    "FederationConfig",
    "AggregationConfig",
    "AuditConfig",
    "load_config",
    "parse_config",
    "describe_keys",
    "config_hash",
    "set_dotted",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """Which data set, and how it is split across sites (or each site's own file)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, serialize_by_alias=True, validate_by_name=True,
        validate_by_alias=True,
    )

    dataset: Literal["digits", "breast_cancer", "diabetes", "fashion_mnist", "csv"] = Field(
        "digits", description="data set: digits | breast_cancer | diabetes | fashion_mnist | csv"
    )
    path: str | None = Field(
        None, description="CSV file, or Fashion-MNIST directory (default: Debian's location)"
    )
    label: str | None = Field(None, description="label column of the CSV file")
    task: Literal["classification", "regression"] = Field(
        "classification", description="CSV task: classification | regression"
    )
    sites: int = Field(5, ge=1, le=100_000, description="number of sites the data is split across")
    partition: Literal["iid", "dirichlet", "quantity"] = Field(
        "iid", description="split: iid | dirichlet (label skew) | quantity (size skew)"
    )
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (small = more skew)")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="held-out share for evaluation")
    image: bool = Field(False, description="keep image shape (needed by model.name = 'cnn')")
    limit: int | None = Field(None, ge=10, description="use only the first N training examples")
    files: tuple[SiteSource, ...] | None = Field(
        None,
        description="each site's own file, read per site: [{path, name, test, holdout, "
        "format}] (docs/own-data.md); replaces dataset/partition and sets data.sites",
    )
    site_schema: Schema | None = Field(
        None,
        alias="schema",
        description="declared schema of data.files: label, numeric, categorical, ignore, "
        "array (docs/own-data.md)",
    )

    @model_validator(mode="before")
    @classmethod
    def _sites_from_files(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and raw.get("files"):
            n = len(raw["files"])
            if "sites" in raw and raw["sites"] != n:
                raise ValueError(
                    f"data.sites ({raw['sites']}) differs from the {n} data.files entries; "
                    "leave data.sites out"
                )
            raw = {**raw, "sites": n}
        return raw

    @model_validator(mode="after")
    def _csv_needs_path(self) -> DataConfig:
        if self.dataset == "csv" and (not self.path or not self.label):
            raise ValueError("dataset = 'csv' needs data.path and data.label")
        if self.files:
            if self.site_schema is None:
                raise ValueError("data.files needs data.schema (the label and columns)")
            fields = type(self).model_fields
            clash = [k for k in ("dataset", "path", "label", "partition", "alpha", "limit")
                     if getattr(self, k) != fields[k].default]
            if clash:
                raise ValueError(
                    f"data.files replaces {sorted(clash)}: each site's file is its data"
                )
        elif self.site_schema is not None:
            raise ValueError("data.schema is for data.files; add one entry per site")
        return self


class ModelConfig(_Section):
    """The model every site trains."""

    name: Literal["logreg", "mlp", "cnn"] = Field("mlp", description="logreg | mlp | cnn")
    hidden: list[int] = Field([128, 128], description="MLP hidden layer widths")

    @model_validator(mode="after")
    def _positive_widths(self) -> ModelConfig:
        if any(h < 1 for h in self.hidden):
            raise ValueError("model.hidden widths must be >= 1")
        return self


class LocalTrainingConfig(_Section):
    """Local training at each site, every round."""

    epochs: int = Field(1, ge=1, le=1000, description="local epochs per round")
    batch_size: int = Field(32, ge=1, description="local minibatch size")
    lr: float = Field(0.1, gt=0, le=1e6, description="local learning rate")
    momentum: float = Field(0.0, ge=0, lt=1, description="local SGD momentum")
    weight_decay: float = Field(0.0, ge=0, description="local L2 weight decay")


class FederationConfig(_Section):
    """Rounds, cohorts, dropouts and the server optimiser."""

    cohort_size: int | None = Field(
        None, ge=1, description="sites sampled per round (default: all sites)"
    )
    cohort_fraction: float | None = Field(
        None, gt=0, le=1, description="alternative to cohort_size: fraction of sites per round"
    )
    sampling: Literal["fixed", "poisson"] = Field(
        "fixed", description="fixed: exactly the cohort size; poisson: each site independently"
    )
    dropout_rate: float = Field(0.0, ge=0, lt=1, description="chance a selected site drops out")
    deadline_s: float | None = Field(
        None,
        gt=0,
        description="simulated per-round deadline; slower sites count as dropped (off if unset)",
    )
    latency_s: float = Field(1.0, gt=0, description="simulated median time of a site's round")
    latency_spread: float = Field(0.5, ge=0, description="log-normal sigma of site latency")
    server_optimizer: Literal["fedavg", "fedavgm", "fedadam"] = Field(
        "fedavg", description="fedavg | fedavgm (server momentum) | fedadam"
    )
    server_lr: float = Field(1.0, gt=0, description="server learning rate")
    server_momentum: float = Field(0.9, ge=0, lt=1, description="fedavgm momentum / fedadam beta1")
    eval_every: int = Field(1, ge=1, description="evaluate on the test set every N rounds")
    mode: Literal["sync", "buffered"] = Field(
        "sync",
        description="sync: rounds wait for the cohort | buffered: asynchronous, the server "
        "applies an update every federation.buffered.buffer_size contributions (docs/async.md)",
    )
    buffered: BufferedConfig = BufferedConfig()
    transport: Literal["simulation", "flower"] = Field(
        "simulation",
        description="simulation: every site in this process (veil train) | flower: the same "
        "run on a Flower SuperLink and SuperNodes, one site per machine (veil deploy run, "
        "docs/deployment.md; needs veil[flower])",
    )

    @model_validator(mode="after")
    def _one_cohort_spec(self) -> FederationConfig:
        if self.cohort_size is not None and self.cohort_fraction is not None:
            raise ValueError("set federation.cohort_size or federation.cohort_fraction, not both")
        return self


class AggregationConfig(_Section):
    """How updates are combined: clipping and the summation protocol."""

    @model_validator(mode="before")
    @classmethod
    def _secure_aggregation_alias(cls, data: Any) -> Any:
        # ``secure_aggregation = true`` (before ``summation``) still means ``secagg``
        if isinstance(data, dict) and "secure_aggregation" in data:
            data = dict(data)
            flag = data.pop("secure_aggregation")
            if not isinstance(flag, bool):
                raise ValueError("aggregation.secure_aggregation must be true or false")
            if "summation" in data and data["summation"] != ("secagg" if flag else "plain"):
                raise ValueError(
                    "set aggregation.summation only (secure_aggregation is its old name)"
                )
            data["summation"] = "secagg" if flag else "plain"
        return data

    @property
    def secure(self) -> bool:
        """True when the server learns only the sum (``secagg`` or ``ckks``)."""
        return self.summation != "plain"

    clip_norm: float | None = Field(
        None, gt=0, description="clip each site's update to this L2 norm (off if unset)"
    )
    summation: Literal["plain", "secagg", "ckks"] = Field(
        "plain",
        description="plain: the server sums updates in the clear | secagg: SecAgg+ (the "
        "server learns only the sum) | ckks: CKKS-encrypted sum (sites hold the key)",
    )
    bits: int = Field(
        32, ge=8, le=62, description="SecAgg: ring width b (bits per quantised coordinate)"
    )
    quantize_range: float = Field(
        1.0, gt=0, description="SecAgg: coordinates are clipped to [-range, range] before rounding"
    )
    neighbours: int | None = Field(
        None,
        ge=2,
        description="SecAgg+: neighbourhood size k (default: chosen from n, dropout, corrupt)",
    )
    expected_dropout: float = Field(
        0.1, ge=0, lt=1, description="SecAgg+: dropout rate the neighbourhood size must survive"
    )
    corrupt_fraction: float = Field(
        0.05, ge=0, lt=0.5, description="SecAgg+: tolerated fraction of colluding sites"
    )
    stage_deadline_s: float | None = Field(
        None, gt=0, description="SecAgg+: per-stage deadline; a silent site counts as dropped"
    )
    fixed_deadlines: bool = Field(
        False, description="SecAgg+ side channels: the server acts only at stage deadlines, "
        "never on an arrival, on the stage's messages in a CSPRNG-shuffled order; every "
        "stage then lasts its full stage_deadline_s (docs/secure-aggregation.md#side-channels)"
    )
    pad_messages: bool = Field(
        False, description="SecAgg+ side channels: pad every message to one size per type "
        "and round, fixed before the round, so sizes are the same for every site"
    )
    site_delay_s: float = Field(
        0.0, ge=0, description="SecAgg+ side channels: each site waits a random (CSPRNG) "
        "delay in [0, site_delay_s) before it sends; keep it well below stage_deadline_s"
    )

    @model_validator(mode="after")
    def _side_channels_fit(self) -> AggregationConfig:
        on = self.fixed_deadlines or self.pad_messages or self.site_delay_s > 0
        if on and "secagg" not in (self.summation, self.strong_summation):
            raise ValueError("fixed_deadlines / pad_messages / site_delay_s protect SecAgg+ "
                             "rounds; set aggregation.summation = 'secagg' or turn them off")
        if self.fixed_deadlines and self.stage_deadline_s is None:
            raise ValueError("aggregation.fixed_deadlines needs aggregation.stage_deadline_s "
                             "(every stage lasts exactly that long)")
        from veil.transport.driver import DEFAULT_STAGE_DEADLINE_S

        deadline = self.stage_deadline_s or DEFAULT_STAGE_DEADLINE_S
        if self.site_delay_s >= deadline:
            raise ValueError(f"aggregation.site_delay_s ({self.site_delay_s}) must be below "
                             f"the stage deadline ({deadline} s) or every site misses it")
        return self

    compression: Literal["none", "topk", "randk", "qsgd", "randk+qsgd"] = Field(
        "none", description="compress each update (docs/compression.md): none | topk (largest "
        "coordinates, plain sum only) | randk (a support shared by the cohort; composes with "
        "secagg and client DP) | qsgd (unbiased stochastic compression_bits-bit rounding) | "
        "randk+qsgd (both)"
    )
    compression_ratio: float = Field(
        0.1, gt=0, le=1, description="topk / randk: fraction of coordinates each site sends"
    )
    compression_bits: int = Field(4, ge=1, le=8, description="qsgd: bits per coordinate")
    error_feedback: bool = Field(
        True, description="topk / randk: a site keeps what it did not send and adds it next round"
    )
    weighted: bool | None = Field(
        None,
        description="weight sites by example count (FedAvg): default true for a plain sum, "
        "false under secagg (a site's count is private; true sends it under the mask) and "
        "never with DP",
    )
    max_weight: float | None = Field(
        None, gt=0, description="secagg with weighted = true: public bound on a site's "
        "example count, the weight column's range (default: the largest site's count)"
    )
    strong_summation: Literal["secagg", "ckks"] | None = Field(
        None,
        description="tiered protection: the stronger summation used in the rounds chosen by "
        "strong_every / strong_final (summation is used in the others; docs/ckks-aggregation.md)",
    )
    strong_every: int | None = Field(
        None, ge=1, description="tiered: every N-th round (N, 2N, ...) uses strong_summation"
    )
    strong_final: bool = Field(False, description="tiered: the last round uses strong_summation")

    @model_validator(mode="after")
    def _ckks_and_tiers_fit(self) -> AggregationConfig:
        if self.weighted and "ckks" in (self.summation, self.strong_summation):
            raise ValueError("a weighted mean is not available under ckks; leave "
                             "aggregation.weighted unset (the mean is unweighted)")
        tiers = self.strong_every is not None or self.strong_final
        if self.strong_summation is None and tiers:
            raise ValueError("strong_every / strong_final need aggregation.strong_summation")
        if self.strong_summation is not None:
            if not tiers:
                raise ValueError("aggregation.strong_summation needs strong_every or "
                                 "strong_final = true (which rounds use it)")
            if self.strong_summation == self.summation:
                raise ValueError("aggregation.strong_summation must differ from summation")
        return self

    @model_validator(mode="after")
    def _weighted_fits(self) -> AggregationConfig:
        if self.max_weight is not None and not (self.weighted and self.summation == "secagg"):
            raise ValueError("aggregation.max_weight is for summation = 'secagg' with "
                             "weighted = true")
        return self

    robust: Literal["none", "median", "trimmed_mean", "multi_krum"] = Field(
        "none", description="plain summation only: robust rule in place of the mean: none | "
        "median | trimmed_mean | multi_krum (docs/robust-aggregation.md)"
    )
    trim_fraction: float = Field(
        0.1, ge=0, lt=0.5, description="robust = 'trimmed_mean': share trimmed at each end"
    )
    krum_f: int | None = Field(
        None, ge=0, description="robust = 'multi_krum': Byzantine sites tolerated (default: "
        "the most the cohort allows, n > 2f + 2)"
    )
    krum_m: int | None = Field(
        None, ge=1, description="robust = 'multi_krum': updates averaged (default: n - f)"
    )
    anomaly: bool = Field(
        False, description="plain summation only: score each update (norm, cosine to the "
        "median; robust z-score) and record the flagged sites"
    )
    anomaly_threshold: float = Field(
        3.5, gt=0, description="anomaly: robust z-score beyond which an update is flagged"
    )
    anomaly_drop: bool = Field(
        False, description="anomaly: leave flagged updates out of the aggregate"
    )
    norm_bound: float | None = Field(
        None, gt=0, description="plain summation only: the server leaves out updates with a "
        "larger L2 norm"
    )
    aggregate_check: bool = Field(
        False, description="refuse a round whose aggregate exceeds what sites clipping to "
        "clip_norm can send (works under secagg)"
    )

    def defences(self) -> Any:
        """The defences against bad sites asked for (a ``veil.aggregation.defences.Defences``)."""
        from veil.aggregation.defences import Defences

        return Defences(
            self.robust, self.trim_fraction, self.krum_f, self.krum_m, self.anomaly,
            self.anomaly_threshold, self.anomaly_drop, self.norm_bound, self.aggregate_check,
            self.clip_norm,
        )

    @model_validator(mode="after")
    def _defences_fit(self) -> AggregationConfig:
        _check_defences(self, client_dp=False, cohort=float("inf"))
        return self

    @property
    def weighted_mean(self) -> bool:
        """Whether the mean is example-weighted (``weighted``, else true for a plain sum)."""
        return self.summation == "plain" if self.weighted is None else self.weighted


def _check_defences(a: AggregationConfig, client_dp: bool, cohort: float) -> None:
    # robust rules / anomaly scores / aggregate check (veil.aggregation.defences)
    from veil.aggregation.defences import check_defences

    strong = getattr(a, "strong_summation", None)  # a tiered sum's secure rounds count too
    summation = strong if a.summation == "plain" and strong is not None else a.summation
    try:
        check_defences(a.defences(), summation, client_dp, cohort)
    except ConfigError as e:
        raise ValueError(str(e).removeprefix(f"{e.key}: ")) from None


class AuditConfig(_Section):
    """What the run records for auditing."""

    canaries: int = Field(
        0, ge=0, description="one-run audit: turn N training examples into canaries (0 = off)"
    )
    log: bool = Field(True, description="append the run to the hash-chained output_dir/audit.log")


#: the smallest cohort secure aggregation accepts: with two sites, each can subtract its
#: own update from the sum and read the other's
MIN_SECURE_COHORT = 3


def secure_cohort_message(cohort: float) -> str:
    """Why a cohort of ``cohort`` sites is refused under secure aggregation, and the fix."""
    return (
        f"secure aggregation needs a cohort of at least {MIN_SECURE_COHORT} sites, got "
        f"{cohort:g}: with 2, each site can subtract its own update from the sum and learn "
        "the other's; raise federation.cohort_size (or data.sites), or set "
        "aggregation.summation = 'plain'"
    )


class RunConfig(_Section):
    """A whole federated run."""

    name: str = Field("run", min_length=1, description="run name; output goes to output_dir/name")
    seed: int = Field(0, ge=0, description="seed for data split, init, sampling (recorded)")
    rounds: int = Field(20, ge=1, le=1_000_000, description="federated rounds")
    output_dir: str = Field("runs", description="where run directories are written")
    threads: int = Field(
        1, ge=1, le=256, description="torch threads during the run (1 is fastest for small models)"
    )
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    local: LocalTrainingConfig = LocalTrainingConfig()
    federation: FederationConfig = FederationConfig()
    aggregation: AggregationConfig = AggregationConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    audit: AuditConfig = AuditConfig()
    policy: dict[str, Any] | None = Field(
        None, description="[policy] targets checked by veil train --enforce-policy: "
        "max_epsilon, delta, max_mia_tpr, min_accuracy (docs/policy.md)"
    )
    tuning: dict[str, Any] | None = Field(
        None, description="[tuning] accounted hyper-parameter search, run by veil tune: "
        "candidates, mean_runs, shape, score_noise, client_score_noise "
        "(docs/differential-privacy.md)"
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        fed = self.federation
        if fed.cohort_size is not None and fed.cohort_size > self.data.sites:
            raise ValueError(
                f"federation.cohort_size ({fed.cohort_size}) is larger than data.sites "
                f"({self.data.sites}); lower it or add sites"
            )
        if self.audit.canaries and self.data.files:
            raise ValueError(
                "audit.canaries does not work with data.files yet: a canary must be held "
                "out of and re-inserted into one site's own file, which veil does not do; "
                "set audit.canaries = 0 (membership inference still runs), or run the "
                "canary audit on a bundled data set split by veil (data.dataset)"
            )
        if self.aggregation.weighted and self.privacy.enabled:
            raise ValueError(
                "aggregation.weighted = true does not go with DP: a site's example count "
                "would change the aggregate outside the mechanism; leave it unset"
            )
        _check_defences(self.aggregation, self.privacy.client_on, self.cohort)
        secure = self.aggregation.secure or self.aggregation.strong_summation is not None
        if secure and self.cohort < MIN_SECURE_COHORT:
            raise ValueError(secure_cohort_message(self.cohort))
        check_buffered(self)
        if self.tuning is not None:  # a bad [tuning] is refused when the config is read
            from veil.federation.tuning_config import parse_tuning

            try:
                parse_tuning(self.tuning)
            except ConfigError as e:  # reported under its own key, not the whole config
                raise ValueError(str(e)) from None
        if self.model.name == "cnn" and not self.data.image:
            raise ValueError("model.name = 'cnn' needs data.image = true")
        if any(c in self.name for c in "/\\") or self.name in (".", ".."):
            raise ValueError("name must not contain path separators")
        return self

    @property
    def cohort(self) -> float:
        """Sites per round (expected, for Poisson sampling)."""
        f = self.federation
        if f.cohort_size is not None:
            return float(f.cohort_size)
        if f.cohort_fraction is not None:
            return max(1.0, f.cohort_fraction * self.data.sites)
        return float(self.data.sites)

    def run_dir(self) -> Path:
        """``output_dir / name``."""
        return Path(self.output_dir) / self.name


def _format_error(err: ValidationError) -> ConfigError:
    parts: list[str] = []
    keys: list[str] = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `veil train --help` lists every key)"
        elif e["type"] != "missing" and not isinstance(e.get("input"), dict):
            msg += f" (got {e.get('input')!r})"
        keys.append(key)
        parts.append(f"{key}: {msg}")
    if len(parts) == 1:
        return ConfigError(parts[0].split(": ", 1)[1], key=keys[0])
    return ConfigError("invalid config: " + "; ".join(parts), key=keys[0] if keys else None)


def parse_config(raw: dict[str, Any]) -> RunConfig:
    """Validate a config mapping.

    Raises:
        ConfigError: naming every bad key and what to do about it.
    """
    if not isinstance(raw, dict):
        raise ConfigError("config must be a table of keys")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise _format_error(e) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read and validate a TOML config file.

    Args:
        path: the TOML file.
        overrides: dotted keys to set after reading (``{"rounds": 3}``).

    Raises:
        ConfigError: missing file, TOML syntax error, or invalid values.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p} is not valid TOML: {e}") from None
    return parse_config(set_dotted(raw, overrides or {}))


def set_dotted(raw: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``{"privacy.target_epsilon": 2.0}``) in a raw config, in place;
    missing tables are created. Returns ``raw``."""
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = value
    return raw


def config_hash(cfg: RunConfig, ignore: tuple[str, ...] = ("rounds",)) -> str:
    """SHA-256 of the config (minus keys that may change on resume)."""
    d = cfg.model_dump(mode="json")
    d.pop("tuning", None)  # a search's trials are configs without it
    for k in ignore:
        d.pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _attribute_docs(model: type[BaseModel]) -> dict[str, str]:
    """Parse a Google-style ``Attributes:`` section of a class docstring."""
    import inspect

    doc = inspect.getdoc(model) or ""
    out: dict[str, str] = {}
    lines = doc.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == "Attributes:")
    except StopIteration:
        return out
    current = None
    for ln in lines[start + 1 :]:
        if not ln.strip():
            continue
        indent = len(ln) - len(ln.lstrip())
        if indent == 0:
            break
        text = ln.strip()
        if indent <= 4 and ":" in text:
            name, desc = text.split(":", 1)
            for n in name.split(","):
                out[n.strip()] = desc.strip()
            current = name.split(",")[-1].strip()
        elif current:
            out[current] += " " + text
    return out


def describe_keys(
    model: type[BaseModel] = RunConfig, prefix: str = ""
) -> list[tuple[str, str, str]]:
    """Every config key as ``(dotted key, default, description)``, for help texts.

    Descriptions come from each field's ``description`` or, failing that, from the
    ``Attributes:`` section of the section's docstring.
    """
    out: list[tuple[str, str, str]] = []
    attr_docs = _attribute_docs(model)
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(describe_keys(ann, prefix + name + "."))
            continue
        default = field.default
        shown = json.dumps(default) if default is not None and not callable(default) else "unset"
        key = prefix + (field.alias or name)
        out.append((key, shown, field.description or attr_docs.get(name, "")))
    return out
