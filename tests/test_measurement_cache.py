"""The measurement cache: verified on every read, rebuilt (never used) when damaged, never
unpickled, built once across processes."""

from __future__ import annotations

import json
import multiprocessing
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

from harness import measurement_cache
from harness.measurement_cache import CacheWarning, get_or_build
from harness.measurements import Measurement

KEY = {"section": "retrieval/fair1m", "model": "dino", "weights": "abc", "views": ["v1"], "profile": "smoke"}


def sample(value: float = 0.986) -> list[Measurement]:
    return [
        Measurement("instance_acc", "dino", value, {"dataset": "bdd100k_mot", "gap": 5},
                    units=np.array([[9.0, 10.0], [8.0, 8.0]]), reducer="ratio", unit_group="bdd100k_mot/videos"),
        Measurement("miou", "dino", 0.5, {"probe": "knn", "exclude_source": False, "level": 10.0},
                    units=np.arange(8, dtype=np.int64).reshape(2, 2, 2), reducer="miou", unit_group="val"),
        Measurement("variance_ratio", "dino", 3.25, {"layer": 12}),
    ]


class Builder:
    def __init__(self, value: float = 0.986):
        self.calls, self.value = 0, value

    def __call__(self) -> list[Measurement]:
        self.calls += 1
        return sample(self.value)


def entry(root: Path) -> tuple[Path, Path]:
    name = measurement_cache.digest(KEY)
    return root / "measurements" / f"{name}.npz", root / "measurements" / f"{name}.json"


def same(a: list[Measurement], b: list[Measurement]) -> bool:
    return all(x.metric == y.metric and x.model == y.model and x.value == y.value and x.params == y.params
               and x.reducer == y.reducer and x.unit_group == y.unit_group
               and (x.units is None) == (y.units is None)
               and (x.units is None or np.array_equal(x.units, y.units))
               for x, y in zip(a, b, strict=True))


def test_a_built_entry_is_read_back_identical_without_rebuilding(tmp_path):
    build = Builder()
    first = get_or_build(tmp_path, KEY, build)
    again = get_or_build(tmp_path, KEY, build)
    assert build.calls == 1
    assert same(first, sample()) and same(again, sample())


def test_a_flipped_bit_is_detected_and_rebuilt_never_used(tmp_path):
    """The fault that once changed a reported number (0.986 -> 0.736) with no warning."""
    get_or_build(tmp_path, KEY, Builder())
    data, _ = entry(tmp_path)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    build = Builder(0.986)
    with pytest.warns(CacheWarning, match="checksum mismatch"):
        measured = get_or_build(tmp_path, KEY, build)
    assert build.calls == 1 and measured[0].value == 0.986


@pytest.mark.parametrize("damage", ["truncate", "delete_data", "other_key", "bad_sidecar"])
def test_any_damage_to_an_entry_rebuilds_it(tmp_path, damage):
    get_or_build(tmp_path, KEY, Builder())
    data, meta = entry(tmp_path)
    if damage == "truncate":
        data.write_bytes(data.read_bytes()[:100])
    elif damage == "delete_data":
        data.unlink()
    elif damage == "other_key":
        stored = json.loads(meta.read_text())
        stored["key"]["model"] = "mae"
        meta.write_text(json.dumps(stored))
    else:
        meta.write_text("{not json")
    build = Builder()
    with pytest.warns(CacheWarning):
        get_or_build(tmp_path, KEY, build)
    assert build.calls == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_or_build(tmp_path, KEY, build)  # the rebuilt entry reads cleanly
    assert build.calls == 1


class Payload:
    """Would create a marker file if it were ever unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_an_entry_holding_a_pickle_is_refused_even_with_a_valid_checksum(tmp_path):
    get_or_build(tmp_path, KEY, Builder())
    data, meta = entry(tmp_path)
    marker = tmp_path / "code-ran"
    hostile = np.empty(1, dtype=object)
    hostile[0] = Payload(str(marker))
    with open(data, "wb") as handle:
        row = {"metric": "miou", "model": "dino", "value": 0.5, "params": {}, "reducer": "miou",
               "reducer_args": {}, "unit_group": "val"}
        np.savez(handle, rows=np.frombuffer(json.dumps([row]).encode(), dtype=np.uint8), units_0=hostile)
    stored = json.loads(meta.read_text())
    import hashlib

    stored["sha256"] = hashlib.sha256(data.read_bytes()).hexdigest()
    meta.write_text(json.dumps(stored))
    assert pickle.dumps(hostile)  # the payload is a real pickle
    build = Builder()
    with pytest.warns(CacheWarning):
        get_or_build(tmp_path, KEY, build)
    assert build.calls == 1
    assert not marker.exists(), "the cache unpickled an untrusted object"


def test_a_change_of_the_code_that_makes_the_numbers_is_another_entry(tmp_path, monkeypatch):
    build = Builder()
    get_or_build(tmp_path, KEY, build)
    measurement_cache.code_digest.cache_clear()
    monkeypatch.setattr(measurement_cache, "code_digest", lambda: "another-version")
    get_or_build(tmp_path, KEY, build)
    assert build.calls == 2


def _build_in_process(root: str, counter: str) -> float:
    def build():
        with open(counter, "a") as handle:
            handle.write("x")
        import time

        time.sleep(0.5)
        return sample()
    return get_or_build(Path(root), KEY, build)[0].value


def test_two_processes_build_an_entry_once(tmp_path):
    counter = tmp_path / "builds"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        values = pool.starmap(_build_in_process, [(str(tmp_path), str(counter))] * 2)
    assert values == [0.986, 0.986]
    assert counter.read_text() == "x"
