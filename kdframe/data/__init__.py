"""Datasets: reading ANI-layout HDF5 and extxyz, splits, reference energies, batching."""

from .dataset import Dataset, LabelSpec
from .readers import read_dataset

__all__ = ["Dataset", "LabelSpec", "read_dataset"]
