"""Data: files on disk -> zero-shot splits -> image datasets -> batches for the network.

``build_data(cfg)`` reads a benchmark (xlsa17 CUB/SUN/AWA2), a custom-format folder or a built-in
drawn set (demo, parts), checks every image, and returns a :class:`ZSLData`. ``build_train_loader``
and ``build_test_loader`` turn its datasets into DataLoaders.
"""

from mgmrn.data.build import (
    ZSLData,
    assemble,
    build_data,
    build_data_once,
    check_sampler_fits,
    read_records,
)
from mgmrn.data.datasets import ImageDataset
from mgmrn.data.errors import DataError
from mgmrn.data.loaders import build_test_loader, build_train_loader

__all__ = [
    "DataError",
    "ImageDataset",
    "ZSLData",
    "assemble",
    "build_data",
    "build_data_once",
    "build_test_loader",
    "build_train_loader",
    "check_sampler_fits",
    "read_records",
]
