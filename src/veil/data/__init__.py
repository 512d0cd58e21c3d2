"""Data sets and their partitioning across sites."""

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

__all__ = [
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
