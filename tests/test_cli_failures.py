"""Every `harness` command fails cleanly through the real entry point: one line
`harness <command>: error: ...` on stderr, exit 1 (2 for usage errors, 130 for Ctrl-C), the
traceback only with --debug; a bug still shows its traceback. Before: a bad checkpoint, a
read-only or full cache, a missing data root or Ctrl-C each printed a traceback (a full
cache: SIGBUS, exit 135, no message at all)."""

from __future__ import annotations

import os
import re
import signal
import sys
import warnings

import pytest
import torch
from faults import DISK_KINDS, KiB, MiB, kill_when, read_only_folder, small_filesystem

from harness.cli import COMMAND_MODULES, main
from harness.io import TEMP_MARK

pytestmark = pytest.mark.usefixtures("isolated_cli")  # tests/conftest.py


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"harness {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _extract(world, cache, *more) -> list[str]:
    return ["extract", "--model", "dino", "--random-init", "--smoke", "--dataset", "fair1m",
            "--data-root", str(world), "--cache-dir", str(cache), "--limit", "1", "--profile", "smoke",
            "--quiet", *more]


def _leftovers(folder):
    return [p for p in folder.rglob("*") if TEMP_MARK in p.name]


# ------------------------------------------------------------------------ the cache
def test_read_only_cache_is_one_line_and_a_filled_one_is_still_read(tmp_path, capsys, synthetic_world,
                                                                   record_property):
    cache = tmp_path / "ro-cache"
    cache.mkdir()
    with read_only_folder(cache) as how:
        record_property("read_only", how)
        assert main(_extract(synthetic_world, cache)) == 1
        line = _one_error_line(capsys, "extract")
        assert f"cannot write the embedding cache in {cache}/embeddings" in line
    assert main(_extract(synthetic_world, cache)) == 0  # fill it
    with read_only_folder(cache):
        assert main(_extract(synthetic_world, cache)) == 0  # every entry there: nothing to write
    assert "tiles-fair1m" in capsys.readouterr().out


@pytest.mark.parametrize("kind", DISK_KINDS)
def test_full_cache_names_folder_and_bytes_and_a_rerun_with_room_succeeds(tmp_path, capsys, synthetic_world,
                                                                        kind, record_property):
    with small_filesystem(tmp_path / "disk", 4 * MiB, kind) as disk:
        record_property("filesystem", disk.kind)
        disk.fill(leave=4 * KiB)
        assert main(_extract(synthetic_world, disk.path, "--layers", *map(str, range(1, 13)))) == 1
        line = _one_error_line(capsys, "extract")
        assert f"no space for the embedding cache in {disk.path}/embeddings/dino/" in line
        assert "bytes" in line and "free" in line
        assert not _leftovers(disk.path)
        disk.make_room()
        assert main(_extract(synthetic_world, disk.path, "--layers", *map(str, range(1, 13)))) == 0


# ------------------------------------------------------------------------ data and arguments
def test_missing_data_root_is_a_usage_error_and_a_wrong_one_says_what_is_missing(tmp_path, capsys):
    base = ["extract", "--model", "dino", "--random-init", "--smoke", "--dataset", "ade20k", "--quiet"]
    assert main(base) == 2
    assert "no data root: pass --data-root" in _one_error_line(capsys, "extract")
    assert main([*base, "--data-root", str(tmp_path / "nowhere")]) == 1
    line = _one_error_line(capsys, "extract")
    assert "dataset folder not found" in line and str(tmp_path / "nowhere" / "ade20k") in line


def test_bad_option_values_are_usage_errors(capsys, synthetic_world, tmp_path):
    assert main(_extract(synthetic_world, tmp_path, "--device", "gpu0")) == 2
    assert "--device gpu0:" in _one_error_line(capsys, "extract")
    assert main(_extract(synthetic_world, tmp_path, "--profile", "huge")) == 2
    assert "unknown profile 'huge'" in _one_error_line(capsys, "extract")
    if not torch.cuda.is_available():
        assert main(_extract(synthetic_world, tmp_path, "--device", "cuda")) == 2
        assert "no CUDA device" in _one_error_line(capsys, "extract")
    with pytest.raises(SystemExit) as caught:  # argparse's own usage errors
        main(_extract(synthetic_world, tmp_path, "--batch-size", "0"))
    assert caught.value.code == 2 and "expected a positive number" in capsys.readouterr().err


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A real (smoke-width) checkpoint, and damaged copies of it."""
    from safetensors.torch import save_file

    from harness.models import load

    folder = tmp_path_factory.mktemp("checkpoints")
    state = {k: v.contiguous() for k, v in load("dino", random_init=True, smoke=True).module.state_dict().items()}
    torch.save(state, folder / "good.pth")
    save_file(state, folder / "good.safetensors")
    for name in ("good.pth", "good.safetensors"):
        data = (folder / name).read_bytes()
        (folder / name.replace("good", "cut")).write_bytes(data[: len(data) // 2])
    (folder / "random.pth").write_bytes(os.urandom(5000))
    (folder / "empty.pth").write_bytes(b"")
    return folder


@pytest.mark.parametrize("name", ["cut.pth", "cut.safetensors", "random.pth", "empty.pth"])
def test_damaged_checkpoint_is_one_line(checkpoints, capsys, synthetic_world, tmp_path, name):
    args = ["extract", "--model", "dino", "--weights", str(checkpoints / name), "--dataset", "fair1m",
            "--data-root", str(synthetic_world), "--limit", "1", "--profile", "smoke", "--quiet"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning, no fallback to a full unpickle
        assert main(args) == 1
    line = _one_error_line(capsys, "extract")
    assert f"checkpoint {checkpoints / name} " in line
    assert re.search(r"could not be read|not a readable safetensors file|not a PyTorch checkpoint", line)


def test_checkpoint_of_another_model_names_the_keys(checkpoints, capsys, synthetic_world):
    args = ["extract", "--model", "dino", "--weights", str(checkpoints / "good.pth"), "--dataset", "fair1m",
            "--data-root", str(synthetic_world), "--limit", "1", "--profile", "smoke", "--quiet"]
    assert main(args) == 1  # a smoke-width file for the full-width model
    assert "does not match the model: shape mismatches: " in _one_error_line(capsys, "extract")


# ------------------------------------------------------------------------ --debug, bugs, Ctrl-C
@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_adds_the_traceback(capsys, tmp_path, where):
    args = ["extract", "--model", "dino", "--random-init", "--smoke", "--dataset", "ade20k",
            "--data-root", str(tmp_path / "nowhere"), "--quiet"]
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "DatasetLayoutError" in err
    assert err.rstrip().splitlines()[-1].startswith("harness extract: error: ")


def _command_names():
    import importlib

    return [importlib.import_module(module).__name__.rsplit(".", 1)[1].replace("_", "-")
            for module in COMMAND_MODULES]


def _args_for(command: str, tmp_path) -> list[str]:
    """Arguments that parse; a command added later runs with none."""
    return {
        "models": ["models"], "doctor": ["doctor"], "synth": ["synth", "--out", str(tmp_path)],
        "extract": ["extract", "--model", "dino", "--dataset", "fair1m"],
        "show-views": ["show-views", "--dataset", "fair1m", "--out", str(tmp_path / "x.png")],
        "report": ["report", str(tmp_path / "claims.json")],
        "compare": ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")],
    }.get(command, [command])


@pytest.mark.parametrize("command", _command_names())
def test_every_command_turns_ctrl_c_into_exit_130_and_a_bug_into_a_traceback(command, monkeypatch, capsys,
                                                                           tmp_path):
    import importlib

    module = importlib.import_module(f"harness.commands.{command.replace('-', '_')}")

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "run", interrupted)
    assert main(_args_for(command, tmp_path)) == 130
    assert capsys.readouterr().err == f"harness {command}: interrupted\n"

    def bug(args):
        raise AttributeError("'NoneType' object has no attribute 'shape'")

    monkeypatch.setattr(module, "run", bug)
    with pytest.raises(AttributeError):  # not an expected failure: Python prints the traceback
        main(_args_for(command, tmp_path))

    def broken_pipe(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(module, "run", broken_pipe)
    assert main(_args_for(command, tmp_path)) == 1  # the reader went away: nothing to tell it


def test_ctrl_c_during_extraction_exits_130_and_leaves_no_partial_entry(tmp_path, synthetic_world):
    """SIGINT to a real `harness extract` while it writes its first entry (full-width ViT-B,
    so a build lasts seconds, and five entries, so it is still running when the signal comes)."""
    from harness.store import EmbeddingStore

    cache = tmp_path / "cache"
    store_root = cache / "embeddings"
    command = [sys.executable, "-m", "harness.cli", "extract", "--model", "dino", "--random-init",
               "--dataset", "fair1m,cityscapes,ade20k", "--data-root", str(synthetic_world), "--cache-dir",
               str(cache), "--limit", "2", "--profile", "smoke", "--batch-size", "1", "--quiet"]
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    result = kill_when(command, ready=lambda: bool(list(store_root.glob(f"dino/*/*{TEMP_MARK}*"))),
                       sig=signal.SIGINT, env=env)
    assert result.returncode == 130, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == "harness extract: interrupted"
    assert "Traceback" not in result.stderr
    assert not _leftovers(store_root)
    finished = list(store_root.glob("dino/*/layer-*/*.npy"))  # entries finished before Ctrl-C are whole
    assert all(array.with_suffix(".json").is_file() for array in finished)
    assert len(EmbeddingStore(store_root).builds()) == len(finished)  # one record per finished entry


# ------------------------------------------------------------------------ the other commands
def test_synth_into_a_read_only_folder(tmp_path, capsys, record_property):
    out = tmp_path / "world"
    out.mkdir()
    with read_only_folder(out) as how:
        record_property("read_only", how)
        assert main(["synth", "--out", str(out), "--datasets", "fair1m"]) == 1
    assert f"{out}/fair1m" in _one_error_line(capsys, "synth")


def test_show_views_into_a_read_only_folder_keeps_the_old_sheet(tmp_path, capsys, synthetic_world):
    out = tmp_path / "sheets"
    out.mkdir()
    (out / "fair1m.png").write_bytes(b"old sheet")
    args = ["show-views", "--dataset", "fair1m", "--root", str(synthetic_world / "fair1m"),
            "--out", str(out / "fair1m.png")]
    with read_only_folder(out):
        assert main(args) == 1
    assert str(out / "fair1m.png") in _one_error_line(capsys, "show-views")
    assert (out / "fair1m.png").read_bytes() == b"old sheet"


def test_report_into_a_read_only_folder_and_from_a_missing_file(tmp_path, capsys):
    from harness.claims import skipped
    from harness.report import build_report, write_report

    source = write_report(build_report([skipped("S6.6", "no data")], environment={"device": "cpu"}),
                          tmp_path / "run", json_only=True)[0]
    out = tmp_path / "rendered"
    out.mkdir()
    with read_only_folder(out):
        assert main(["report", str(source), "--out", str(out)]) == 1
    assert f"cannot write the claims report into {out}: " in _one_error_line(capsys, "report")
    assert main(["report", str(tmp_path / "missing.json")]) == 2
    assert "cannot read the claims report" in _one_error_line(capsys, "report")


def test_compare_failures_exit_2_never_1_which_means_a_regression(tmp_path, capsys):
    (tmp_path / "cut.json").write_text('{"schema_version": 1, "claims": [')
    assert main(["compare", str(tmp_path / "cut.json"), str(tmp_path / "missing.json")]) == 2
    assert "invalid JSON" in _one_error_line(capsys, "compare")


def test_models_and_doctor_report_rather_than_fail_on_odd_folders(tmp_path, capsys):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    assert main(["models", "--cache-dir", str(not_a_folder)]) == 0
    assert main(["doctor", "--cache-dir", str(not_a_folder), "--data-root", str(not_a_folder)]) == 0
    out = capsys.readouterr().out
    assert "[missing] dataset fair1m" in out and "no: needs" in out
