"""write_report on a full or read-only report folder: the previous claims.json/md/html (perhaps
someone's baseline) stay whole and loadable, the error names the folder and why, and no temp
file is left. Before: Path.write_text truncated claims.json first, and a disk that filled
half way left it as cut JSON (the control step of the tmpfs variant shows this)."""

from __future__ import annotations

import errno
import json
import pickle

import pytest
from faults import DISK_KINDS, KiB, MiB, read_only_folder, small_filesystem

from harness.claims import skipped
from harness.io import TEMP_MARK
from harness.report import ReportError, ReportWriteError, build_report, load_report, write_report

ENVIRONMENT = {"versions": {"torch": "2.x"}, "git": None, "device": "cpu", "python": "3.11"}


def _report(note: str = "") -> dict:
    return build_report([skipped("S6.6", "MOT17 not found under DATA/mot17")],
                        run={"profile": "paper", "note": note}, environment=ENVIRONMENT)


@pytest.mark.parametrize("kind", DISK_KINDS)
def test_full_report_folder_keeps_the_previous_report(tmp_path, kind, record_property):
    with small_filesystem(tmp_path / "disk", 1 * MiB, kind) as disk:
        record_property("filesystem", disk.kind)
        out = disk.path / "reports"
        old_paths = write_report(_report("baseline"), out)
        old = {p.name: p.read_bytes() for p in old_paths}
        disk.fill(leave=48 * KiB)
        bigger = _report("x" * 200 * KiB)

        if disk.kind == "tmpfs":  # control: the old way destroys the baseline
            copy = disk.path / "copy.json"
            copy.write_bytes(old["claims.json"])
            with pytest.raises(OSError):
                copy.write_text(json.dumps(bigger))
            with pytest.raises(ReportError):
                load_report(copy)
            copy.unlink()

        with pytest.raises(ReportWriteError) as caught:
            write_report(bigger, out)
        err = caught.value
        # an OSError: harness.plugin's fallback to the temp folder catches it
        assert isinstance(err, OSError) and err.errno == errno.ENOSPC and err.filename == str(out)
        assert str(err) == (f"cannot write the claims report into {out}: No space left on device; "
                            "the files already there are unchanged")
        assert {p.name: p.read_bytes() for p in old_paths} == old
        assert load_report(out / "claims.json")["run"]["note"] == "baseline"
        assert not [p for p in out.iterdir() if TEMP_MARK in p.name]

        disk.make_room()
        write_report(bigger, out)
        assert load_report(out / "claims.json")["run"]["note"].startswith("xxx")


def test_read_only_report_folder_is_a_clear_error(tmp_path, record_property):
    out = tmp_path / "reports"
    write_report(_report("baseline"), out)
    with read_only_folder(out) as how:
        record_property("read_only", how)
        with pytest.raises(ReportWriteError, match=f"cannot write the claims report into {out}: ") as caught:
            write_report(_report("new"), out)
    assert caught.value.errno in (errno.EROFS, errno.EPERM, errno.EACCES)
    assert load_report(out / "claims.json")["run"]["note"] == "baseline"


def test_report_write_error_pickles(tmp_path):
    err = ReportWriteError(errno.ENOSPC, "No space left on device", str(tmp_path))
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is ReportWriteError and str(again) == str(err) and again.errno == errno.ENOSPC
