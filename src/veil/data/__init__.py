"""Data sets, their partitioning across sites, and each site's own file with a schema."""

from veil.data.datasets import (
    DATASETS,
    Dataset,
    load_breast_cancer,
    load_csv,
    load_dataset,
    load_diabetes,
    load_digits,
    load_fashion_mnist,
    read_idx,
)
from veil.data.partition import PARTITIONS, partition
from veil.data.schema import (
    ArrayFeatures,
    CategoricalColumn,
    Label,
    NumericColumn,
    Schema,
    canonical_value,
    parse_schema,
)
from veil.data.sites import (
    FederatedArrays,
    FederatedData,
    SiteSource,
    SiteSplit,
    load_site,
    load_sites,
    parse_sources,
)

__all__ = [
    "ArrayFeatures",
    "CategoricalColumn",
    "FederatedArrays",
    "Label",
    "NumericColumn",
    "Schema",
    "FederatedData",
    "SiteSource",
    "SiteSplit",
    "canonical_value",
    "load_site",
    "load_sites",
    "parse_schema",
    "parse_sources",
    "DATASETS",
    "Dataset",
    "PARTITIONS",
    "load_breast_cancer",
    "load_csv",
    "load_dataset",
    "load_diabetes",
    "load_digits",
    "load_fashion_mnist",
    "partition",
    "read_idx",
]
