"""What every view shares: a deterministic cache key and a small cache of decoded images."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence

from harness.views.ops import CORRUPTIONS, LEVELS


class LRU:
    """The last few decoded source images, so tiles of one image decode it once."""

    def __init__(self, capacity: int = 4):
        self.capacity = capacity
        self._items: OrderedDict = OrderedDict()

    def get(self, key, make: Callable):
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()
        self._items[key] = value
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return value


def view_key(kind: str, dataset, ids: Sequence[str], **params) -> str:
    """Stable name of a view: everything that determines its pixels, hashed."""
    ids_digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    payload = json.dumps({"view": kind, "dataset": dataset.name, "split": dataset.split,
                          "ids": ids_digest, **params}, sort_keys=True)
    return f"{kind}-{dataset.name}-{dataset.split}-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def check_corruption(kind: str | None, level) -> float | None:
    """The level as a float, so that 10 and 10.0 name the same view and draw the same noise."""
    if kind is None:
        if level is not None:
            raise ValueError("a corruption level was given without a corruption kind")
        return None
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; expected one of {CORRUPTIONS}")
    if level is None:
        raise ValueError(f"corruption {kind!r} needs a level, e.g. one of {LEVELS[kind]}")
    return float(level)
