"""The five datasets of the paper, each read from its own native layout.

`open_dataset(name, root, split)` returns a sized, lazily read sequence of samples; `root` is
the dataset's own folder, e.g. `<data-root>/cityscapes`. Every sample has `.id` (unique within
the dataset across splits: "<split>/<name>"), `.image` (uint8 [H, W, 3]) and its annotation:
`.labels` (uint8 [H, W], class ids, 255 = ignore) for cityscapes and ade20k, `.objects` for
fair1m and the two video datasets.
"""

from __future__ import annotations

from pathlib import Path

from . import ade20k, bdd100k, cityscapes, fair1m, mot17
from .common import DATASET_NAMES, HOW_TO_GET, DatasetFormatError, DatasetLayoutError

_MODULES = {"cityscapes": cityscapes, "ade20k": ade20k, "fair1m": fair1m, "bdd100k_mot": bdd100k, "mot17": mot17}

# The split each claim reads when none is named (BDD100K: val videos; MOT17: train, the only
# split with ground truth).
DEFAULT_SPLITS = {"cityscapes": ("train", "val"), "ade20k": ("train", "val"), "fair1m": ("train",),
                  "bdd100k_mot": ("val",), "mot17": ("train",)}
NUM_CLASSES = {name: module.NUM_CLASSES for name, module in _MODULES.items()}
CLASS_NAMES = {name: module.CLASS_NAMES for name, module in _MODULES.items()}

__all__ = [
    "CLASS_NAMES", "DATASET_NAMES", "DEFAULT_SPLITS", "HOW_TO_GET", "NUM_CLASSES",
    "DatasetFormatError", "DatasetLayoutError", "check_layout", "open_dataset",
]


def _module(name: str):
    try:
        return _MODULES[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASET_NAMES}") from None


def open_dataset(name: str, root: str | Path, split: str):
    """Open one split of a dataset from its folder in native layout."""
    return _module(name).open(root, split)


def check_layout(name: str, root: str | Path) -> None:
    """Raise DatasetLayoutError (naming the expected path and how to get the data) unless
    `root` holds the folders that the default splits of `name` are read from."""
    module = _module(name)
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(name, root, "dataset folder not found")
    for split in DEFAULT_SPLITS[name]:
        module.check_layout(root, split)
