"""A declared schema for a site's own file: the label, categorical and numeric columns.

Every site reads its file with the same declared schema, so the features mean the same
thing everywhere without any site seeing another's data. Whatever is *fitted* (per-site
scalers, imputation values) is fitted on that site's own training rows only; whatever must
agree across sites (category lists, label classes, public feature ranges) is *declared*.

Example (TOML, the same keys as the Python models below)::

    [data.schema]
    label = { name = "outcome", task = "classification", classes = [0, 1] }
    numeric = [
      { name = "age", range = [0, 120], missing = "median" },
      { name = "bmi", scale = "site", missing = "mean", indicator = true },
    ]
    categorical = [
      { name = "sex", categories = ["F", "M"], encoding = "onehot" },
      { name = "stage", categories = ["I", "II", "III"], encoding = "ordinal",
        missing = "constant", fill = "I" },
    ]
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from veil.errors import ConfigError

__all__ = [
    "Label",
    "NumericColumn",
    "CategoricalColumn",
    "ArrayFeatures",
    "Schema",
    "canonical_value",
    "parse_schema",
    "MISSING_TOKENS",
]

#: Cell values read as "missing" in a CSV (after stripping whitespace; case-insensitive).
MISSING_TOKENS = ("", "na", "n/a", "nan", "null", "none", "?")


def canonical_value(value: object) -> str:
    """The canonical text of a label or category, so that equal values compare equal.

    Numbers are compared as numbers: ``"1"``, ``"1.0"``, ``" 1 "``, ``1`` and ``1.0`` all
    become ``"1"``; ``"0.50"`` and ``0.5`` become ``"0.5"``. Other text is stripped only
    (case is kept: ``"M"`` and ``"m"`` stay different).
    """
    if isinstance(value, bool):
        return str(int(value))
    s = str(value).strip()
    try:
        f = float(s)
    except ValueError:
        return s
    if not math.isfinite(f):
        return s
    if f == int(f):
        return str(int(f))
    return repr(f)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Label(_Spec):
    """The label column.

    Attributes:
        name: column name in the CSV (ignored for IDX/NumPy files, which hold ``y``).
        task: ``"classification"`` or ``"regression"``.
        classes: the declared label set, in class-id order (classification: required;
            ``[0, 1]`` and ``["0", "1"]`` are the same; a file value outside it is an error).
    """

    name: str = Field("label", min_length=1, description="label column name")
    task: Literal["classification", "regression"] = Field(
        "classification", description="classification | regression"
    )
    classes: tuple[str, ...] | None = Field(
        None, description="declared label set (classification), in class-id order"
    )

    @field_validator("classes", mode="before")
    @classmethod
    def _canonical_classes(cls, v: Any) -> Any:
        if v is None:
            return None
        if not isinstance(v, (list, tuple)):
            raise ValueError("classes must be a list of labels, e.g. [0, 1] or ['no', 'yes']")
        out = tuple(canonical_value(c) for c in v)
        if len(set(out)) != len(out):
            raise ValueError(f"classes has duplicates once numbers are compared as numbers: {out}")
        return out

    @model_validator(mode="after")
    def _classes_for_classification(self) -> Label:
        if self.task == "classification" and (self.classes is None or len(self.classes) < 2):
            raise ValueError(
                "classification needs the declared label set: label.classes = [0, 1] (or the "
                "names), at least two classes; every site uses the same class ids"
            )
        if self.task == "regression" and self.classes is not None:
            raise ValueError("label.classes is for classification; remove it for regression")
        return self

    @property
    def n_classes(self) -> int:
        """Number of classes (1 for regression)."""
        return len(self.classes) if self.classes else 1


class NumericColumn(_Spec):
    """A numeric feature column.

    Attributes:
        name: column name.
        range: public ``[low, high]`` of the column (not computed from anyone's data).
        scale: ``"range"`` maps ``range`` to [0, 1] (the same at every site); ``"site"``
            standardises with the site's own training mean and std (said in the record);
            ``"none"`` keeps raw values. Default: ``"range"`` when a range is given, else
            ``"site"``.
        outside: a value outside ``range``: ``"error"`` (default) or ``"clip"``.
        missing: ``"error"`` (default), or impute with the site's own ``"mean"``/``"median"``
            (scikit-learn's SimpleImputer, fitted on the site's training rows) or a
            ``"constant"`` ``fill``.
        fill: the constant for ``missing = "constant"``.
        indicator: add a 0/1 column saying the value was missing.
    """

    name: str = Field(..., min_length=1)
    range: tuple[float, float] | None = None
    scale: Literal["range", "site", "none"] | None = None
    outside: Literal["error", "clip"] = "error"
    missing: Literal["error", "mean", "median", "constant"] = "error"
    fill: float | None = None
    indicator: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> NumericColumn:
        if self.range is not None:
            lo, hi = self.range
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(
                    f"range must be finite [low, high] with low < high, got {self.range}"
                )
        if self.scale == "range" and self.range is None:
            raise ValueError("scale = 'range' needs range = [low, high]")
        if self.missing == "constant" and (self.fill is None or not math.isfinite(self.fill)):
            raise ValueError("missing = 'constant' needs a finite fill value")
        if self.missing != "constant" and self.fill is not None:
            raise ValueError("fill is only used with missing = 'constant'")
        if self.fill is not None and self.range is not None and not (
            self.range[0] <= self.fill <= self.range[1]
        ):
            raise ValueError(f"fill {self.fill} is outside range {list(self.range)}")
        return self

    @property
    def scaling(self) -> str:
        """The scaling actually used (``scale`` with its default resolved)."""
        if self.scale is not None:
            return self.scale
        return "range" if self.range is not None else "site"


class CategoricalColumn(_Spec):
    """A categorical feature column with declared categories.

    Attributes:
        name: column name.
        categories: the declared categories (numbers compare as numbers, see
            :func:`canonical_value`); identical at every site.
        encoding: ``"onehot"`` (one 0/1 column per category, scikit-learn's OneHotEncoder)
            or ``"ordinal"`` (category position / (k - 1), in [0, 1], from OrdinalEncoder).
        unknown: a value not in ``categories``: ``"error"`` (default) or ``"ignore"``
            (all-zero one-hot row; ordinal refuses ``"ignore"``).
        missing: ``"error"`` (default), ``"most_frequent"`` (the site's own mode, fitted on
            its training rows) or ``"constant"`` (``fill``, one of the categories).
        fill: the category for ``missing = "constant"``.
    """

    name: str = Field(..., min_length=1)
    categories: tuple[str, ...] = Field(..., min_length=1)
    encoding: Literal["onehot", "ordinal"] = "onehot"
    unknown: Literal["error", "ignore"] = "error"
    missing: Literal["error", "most_frequent", "constant"] = "error"
    fill: str | None = None

    @field_validator("categories", mode="before")
    @classmethod
    def _canonical_categories(cls, v: Any) -> Any:
        if not isinstance(v, (list, tuple)):
            raise ValueError("categories must be a list")
        out = tuple(canonical_value(c) for c in v)
        if len(set(out)) != len(out):
            raise ValueError(f"categories has duplicates once numbers compare as numbers: {out}")
        return out

    @field_validator("fill", mode="before")
    @classmethod
    def _canonical_fill(cls, v: Any) -> Any:
        return None if v is None else canonical_value(v)

    @model_validator(mode="after")
    def _consistent(self) -> CategoricalColumn:
        if self.missing == "constant" and self.fill not in self.categories:
            raise ValueError(
                f"missing = 'constant' needs fill to be one of the categories {self.categories}"
            )
        if self.missing != "constant" and self.fill is not None:
            raise ValueError("fill is only used with missing = 'constant'")
        if self.encoding == "ordinal" and self.unknown == "ignore":
            raise ValueError("ordinal encoding cannot ignore unknown values; use onehot")
        return self


class ArrayFeatures(_Spec):
    """How IDX and NumPy features are read (they are numeric arrays already).

    Attributes:
        range: public ``[low, high]`` of every feature (``[0, 255]`` for 8-bit images).
        scale: ``"range"`` maps ``range`` to [0, 1]; ``"none"`` keeps values as stored.
            Default: ``"range"`` when a range is given, else ``"none"``.
        flat: flatten each example to one feature vector (else images keep ``(C, H, W)``).
    """

    range: tuple[float, float] | None = None
    scale: Literal["range", "none"] | None = None
    flat: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ArrayFeatures:
        if self.range is not None and not (self.range[0] < self.range[1]):
            raise ValueError(f"range must be [low, high] with low < high, got {self.range}")
        if self.scale == "range" and self.range is None:
            raise ValueError("scale = 'range' needs range = [low, high]")
        return self

    @property
    def scaling(self) -> str:
        """The scaling actually used."""
        if self.scale is not None:
            return self.scale
        return "range" if self.range is not None else "none"


class Schema(_Spec):
    """What every site's file holds.

    Attributes:
        label: the label column and the declared label set.
        numeric: numeric feature columns (CSV).
        categorical: categorical feature columns (CSV).
        ignore: CSV columns present in the files but not used (any other undeclared
            column is an error, so nothing is dropped silently).
        delimiter: CSV field separator.
        array: how IDX / NumPy features are read.
    """

    label: Label
    numeric: tuple[NumericColumn, ...] = ()
    categorical: tuple[CategoricalColumn, ...] = ()
    ignore: tuple[str, ...] = ()
    delimiter: str = Field(",", min_length=1, max_length=1)
    array: ArrayFeatures = ArrayFeatures()

    @field_validator("label", mode="before")
    @classmethod
    def _label_shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _unique_names(self) -> Schema:
        names = [self.label.name] + [c.name for c in self.numeric] + [
            c.name for c in self.categorical] + list(self.ignore)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"columns declared more than once: {dup}")
        return self

    @property
    def columns(self) -> tuple[NumericColumn | CategoricalColumn, ...]:
        """Feature columns in output order: numeric first, then categorical."""
        return (*self.numeric, *self.categorical)

    def feature_names(self) -> list[str]:
        """Names of the encoded CSV features (``"sex=F"`` for one-hot columns)."""
        out: list[str] = []
        for c in self.numeric:
            out.append(c.name)
        for c in self.numeric:
            if c.indicator:
                out.append(f"{c.name}_missing")
        for k in self.categorical:
            if k.encoding == "onehot":
                out.extend(f"{k.name}={v}" for v in k.categories)
            else:
                out.append(k.name)
        return out


def parse_schema(raw: object, key: str = "data.schema") -> Schema:
    """Validate a schema mapping (a TOML table).

    Raises:
        ConfigError: naming the first bad key (``data.schema.numeric.1.range``) and the fix.
    """
    if isinstance(raw, Schema):
        return raw
    if not isinstance(raw, dict):
        raise ConfigError("must be a table with at least `label`", key=key)
    try:
        return Schema.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = "unknown key (see docs/own-data.md for the schema keys)"
        more = f" (and {len(e.errors()) - 1} more problems)" if len(e.errors()) > 1 else ""
        raise ConfigError(msg + more, key=f"{key}.{loc}" if loc else key) from None
