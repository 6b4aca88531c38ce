"""The measurement cache: what the probes made of the embeddings, per (section, model), shared
by xdist workers and warm re-runs.

Layout: <cache-dir>/measurements/<digest>.npz + <digest>.json, where the digest hashes the
key (section, model, weights digest, view keys, profile, harness version and a digest of the
code that makes the numbers). The .npz holds plain arrays only (read with
allow_pickle=False: nothing in the cache is unpickled); the .json sidecar, written last,
holds the key and the sha256 of the .npz. A read checks both: an entry whose key differs or
whose bytes do not match its checksum is logged, warned about and rebuilt, never used. A
file lock per entry makes concurrent processes build it once.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

import harness
from harness.io import atomic_write_bytes
from harness.measurements import Measurement

log = logging.getLogger(__name__)
FORMAT = 1
# The code whose changes change the numbers: a new digest rebuilds every measurement.
CODE_PACKAGES = ("experiments", "analyses", "probes", "views", "measurements.py", "profiles.py")


class CacheWarning(UserWarning):
    """A cached measurement was corrupt or stale and is being rebuilt."""


@functools.cache
def code_digest() -> str:
    root = Path(harness.__file__).parent
    sha = hashlib.sha256()
    for name in CODE_PACKAGES:
        path = root / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py") if not path.suffix else path]
        for file in files:
            if file.is_file():
                sha.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes())
    return sha.hexdigest()[:16]


def entry_key(key: dict[str, Any]) -> dict[str, Any]:
    return {**key, "harness": harness.__version__, "code": code_digest(), "format": FORMAT}


def digest(key: dict[str, Any]) -> str:
    text = json.dumps(entry_key(key), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def encode(measurements: Sequence[Measurement]) -> bytes:
    """Measurements as the bytes of an .npz of plain arrays (rows as JSON text)."""
    arrays: dict[str, np.ndarray] = {}
    rows = []
    for i, m in enumerate(measurements):
        row = {"metric": m.metric, "model": m.model, "value": float(m.value), "params": m.params,
               "reducer": m.reducer, "reducer_args": m.reducer_args, "unit_group": m.unit_group}
        if m.units is not None:
            arrays[f"units_{i}"] = np.asarray(m.units)
        rows.append(row)
    arrays["rows"] = np.frombuffer(json.dumps(rows, default=_json_default).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} in a measurement's parameters is not plain JSON")


def decode(data: bytes) -> list[Measurement]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        rows = json.loads(bytes(npz["rows"]).decode())
        return [Measurement(r["metric"], r["model"], r["value"], r["params"],
                            units=npz[f"units_{i}"] if f"units_{i}" in npz.files else None,
                            reducer=r["reducer"], reducer_args=r["reducer_args"], unit_group=r["unit_group"])
                for i, r in enumerate(rows)]


def read(folder: Path, key: dict[str, Any]) -> list[Measurement] | None:
    """The verified entry for `key`, or None (absent, or corrupt: then it is removed)."""
    name = digest(key)
    data_path, meta_path = folder / f"{name}.npz", folder / f"{name}.json"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != json.loads(json.dumps(entry_key(key), sort_keys=True, default=str)):
            raise ValueError("its key differs from the one asked for")
        data = data_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            raise ValueError("checksum mismatch (the file was changed or damaged)")
        return decode(data)
    except (OSError, ValueError, KeyError) as err:
        message = f"measurement cache: {data_path} unusable ({err}); rebuilding it"
        log.warning(message)
        warnings.warn(message, CacheWarning, stacklevel=3)
        meta_path.unlink(missing_ok=True)
        data_path.unlink(missing_ok=True)
        return None


def get_or_build(root: Path, key: dict[str, Any], build: Callable[[], Sequence[Measurement]]) -> list[Measurement]:
    """The cached measurements for `key`, built once across processes (`build()`) when absent
    or unusable."""
    folder = Path(root) / "measurements"
    folder.mkdir(parents=True, exist_ok=True)
    name = digest(key)
    found = read(folder, key)
    if found is not None:
        return found
    with FileLock(str(folder / f"{name}.lock")):
        found = read(folder, key)  # another process may have built it while we waited
        if found is not None:
            return found
        measurements = list(build())
        data = encode(measurements)
        atomic_write_bytes(folder / f"{name}.npz", data)
        meta = {"key": entry_key(key), "sha256": hashlib.sha256(data).hexdigest(), "rows": len(measurements)}
        atomic_write_bytes(folder / f"{name}.json", json.dumps(meta, sort_keys=True, default=str, indent=1).encode())
        return decode(data)
