"""What every reader shares: the two errors, where each dataset comes from, image I/O."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

DATASET_NAMES = ("cityscapes", "ade20k", "fair1m", "bdd100k_mot", "mot17")

# What a person must do to get each dataset; quoted in every layout error and by `harness doctor`.
HOW_TO_GET = {
    "cityscapes": (
        "Cityscapes: register (free account required) at https://www.cityscapes-dataset.com/, "
        "download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip and unpack both into "
        "<data-root>/cityscapes/ so that it holds leftImg8bit/{train,val}/<city>/ and "
        "gtFine/{train,val}/<city>/ (the *_gtFine_labelIds.png files are read)."
    ),
    "ade20k": (
        "ADE20K SceneParsing: download ADEChallengeData2016.zip (no registration) from "
        "http://sceneparsing.csail.mit.edu/ and unpack it into <data-root>/ade20k/ so that it holds "
        "ADEChallengeData2016/images/{training,validation}/ and "
        "ADEChallengeData2016/annotations/{training,validation}/."
    ),
    "fair1m": (
        "FAIR1M 2.0: sign in at the ISPRS/Gaofen challenge site (https://www.gaofen-challenge.com/, "
        "registration required) and unpack the train and validation archives into <data-root>/fair1m/ "
        "so that it holds train/part1/{images,labelXml}/, train/part2/{images,labelXml}/ and "
        "validation/{images,labelXml}/ (images are <n>.tif, labels <n>.xml)."
    ),
    "bdd100k_mot": (
        "BDD100K MOT 2020: accept the licence at https://bdd-data.berkeley.edu/ (mirror "
        "https://dl.cv.ethz.ch/bdd100k/data/), download the 'MOT 2020' images (track val) and "
        "labels (box_track_20) and unpack them into <data-root>/bdd100k_mot/ so that it holds "
        "images/track/val/<video>/<video>-0000001.jpg and labels/box_track_20/val/<video>.json."
    ),
    "mot17": (
        "MOT17: download MOT17.zip (no registration) from https://motchallenge.net/data/MOT17/ and "
        "unpack it into <data-root>/mot17/ so that it holds MOT17/train/MOT17-02-FRCNN/"
        "{seqinfo.ini,img1/,gt/gt.txt} (a train/ folder directly under mot17/ also works)."
    ),
}


class DatasetLayoutError(FileNotFoundError, ValueError):
    """A dataset folder is missing or not in its native layout."""

    def __init__(self, name: str, expected: os.PathLike | str, problem: str):
        self.dataset = name
        self.expected = Path(expected)
        super().__init__(f"{problem}: expected {self.expected}. How to get it: {HOW_TO_GET[name]}")

    def __str__(self) -> str:  # FileNotFoundError would otherwise print only errno-style args
        return self.args[0]

    def __reduce__(self):  # picklable across worker processes despite the 3-argument __init__
        return _rebuild_layout_error, (self.dataset, str(self.expected), self.args[0])


def _rebuild_layout_error(name: str, expected: str, message: str) -> DatasetLayoutError:
    err = DatasetLayoutError.__new__(DatasetLayoutError)
    Exception.__init__(err, message)
    err.dataset, err.expected = name, Path(expected)
    return err


class DatasetFormatError(ValueError):
    """A file of the dataset exists but its content is not what the format says."""

    def __init__(self, path: os.PathLike | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        return DatasetFormatError, (str(self.path), self.problem)


def require_dir(name: str, path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetLayoutError(name, path, f"{what} folder not found")
    return path


def read_rgb(path: Path) -> np.ndarray:
    """uint8 [H, W, 3] from any image file PIL reads (PNG, JPEG, 8-bit TIFF)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise
    except OSError as err:
        raise DatasetFormatError(path, f"cannot decode image ({err})") from err


def read_label_png(path: Path) -> np.ndarray:
    """A single-channel 8-bit label map as uint8 [H, W]."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P"):
                raise DatasetFormatError(path, f"expected an 8-bit single-channel label PNG, got mode {im.mode}")
            return np.asarray(im)
    except OSError as err:
        raise DatasetFormatError(path, f"cannot decode label image ({err})") from err


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the header only."""
    with Image.open(path) as im:
        return im.height, im.width


def check_same_size(image: np.ndarray, labels: np.ndarray, label_path: Path, image_path: Path) -> None:
    if image.shape[:2] != labels.shape[:2]:
        raise DatasetFormatError(
            label_path,
            f"label size {labels.shape[1]}x{labels.shape[0]} differs from its image "
            f"{image_path.name} ({image.shape[1]}x{image.shape[0]}); the label must match pixel for pixel",
        )


class IndexedSplit(Sequence):
    """One split of an image dataset: a lazily read sequence of entries addressed by index
    or by sample id. Subclasses scan `_entries` (each with an `.id`) and read a sample in
    `__getitem__`; `title` names the dataset in error messages."""

    title = "dataset"

    def _set_entries(self, entries: list) -> None:
        self._entries = entries
        self._index = {e.id: i for i, e in enumerate(entries)}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self._entries]

    def index_of(self, sample_id: str) -> int:
        try:
            return self._index[sample_id]
        except KeyError:
            raise KeyError(f"{sample_id!r} is not a {self.title} {self.split} id") from None

    def get(self, sample_id: str):
        return self[self.index_of(sample_id)]
