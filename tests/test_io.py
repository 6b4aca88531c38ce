"""harness.io: atomic replacement, all-or-nothing groups of files, JSON-lines records that
survive a cut line, and disk space reserved before it is written through a memory map."""

from __future__ import annotations

import errno
import json
import os
import stat

import pytest
from faults import DISK_KINDS, KiB, MiB, small_filesystem

from harness.io import (
    TEMP_MARK,
    append_record,
    atomic_write_bytes,
    atomic_write_files,
    atomic_write_text,
    read_records,
    remove_temp_files,
    reserve_space,
    temp_owner,
    temp_sibling,
)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if TEMP_MARK in p.name)


def test_atomic_write_replaces_and_gives_new_files_normal_permissions(tmp_path):
    target = tmp_path / "claims.json"
    atomic_write_text(target, "old")
    old_umask = os.umask(0o027)
    try:
        atomic_write_bytes(target, b"new")
    finally:
        os.umask(old_umask)
    assert target.read_text() == "new" and not _leftovers(tmp_path)
    # like open(..., "w") under that umask, not the 0600 of a tempfile.mkstemp file
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    """Before: Path.write_text truncates the target first, so any failure while writing
    (here: the data cannot be encoded half way) leaves it cut."""
    target = tmp_path / "baseline.json"
    target.write_text('{"old": true}')
    with pytest.raises(TypeError):
        atomic_write_files({target: '{"new": ', tmp_path / "other": object()})  # second fails
    assert target.read_text() == '{"old": true}' and not (tmp_path / "other").exists()
    assert not _leftovers(tmp_path)


@pytest.mark.parametrize("kind", DISK_KINDS)
def test_full_disk_keeps_every_old_file_names_the_target_and_cleans_up(tmp_path, kind, record_property):
    with small_filesystem(tmp_path / "disk", 1 * MiB, kind) as disk:
        record_property("filesystem", disk.kind)
        small, large = disk.path / "claims.md", disk.path / "claims.html"
        atomic_write_files({small: "old md", large: "old html"})
        disk.fill(leave=64 * KiB)
        with pytest.raises(OSError) as caught:
            atomic_write_files({small: "new md", large: "x" * (256 * KiB)})
        assert caught.value.errno == errno.ENOSPC
        assert caught.value.filename == str(large)  # the file meant, not its temp file
        assert (small.read_text(), large.read_text()) == ("old md", "old html")  # neither replaced
        assert not _leftovers(disk.path)
        disk.make_room()
        atomic_write_files({small: "new md", large: "x" * (256 * KiB)})
        assert small.read_text() == "new md"


def test_a_missing_folder_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        atomic_write_text(tmp_path / "nope" / "claims.json", "{}")
    assert caught.value.filename == str(tmp_path / "nope" / "claims.json")


def test_temp_names_carry_their_writer_and_only_dead_writers_are_cleaned(tmp_path):
    mine = temp_sibling(tmp_path / "a.json")
    assert mine.parent == tmp_path and temp_owner(mine) == os.getpid() and temp_owner(tmp_path / "a.json") is None
    mine.write_text("in progress")
    dead = tmp_path / f"a.json{TEMP_MARK}999999999-0000"
    dead.write_text("killed")
    other = tmp_path / f"b.json{TEMP_MARK}999999999-0000"
    other.write_text("killed")
    assert remove_temp_files(tmp_path, "a.json") == [dead]
    assert mine.exists() and other.exists()
    assert sorted(remove_temp_files(tmp_path, only_dead=False)) == sorted([mine, other])


# ------------------------------------------------------------------------- JSON-lines logs
def test_append_after_a_cut_line_starts_a_new_line(tmp_path):
    """A record cut by a full disk or a kill. Before: open(log, "a").write(record + "\\n")
    glued the next record onto it, so that one became unreadable too."""
    log = tmp_path / "builds.jsonl"
    append_record(log, {"n": 1})
    with open(log, "a") as handle:
        handle.write('{"n": 2, "host": "gpu-')  # the cut record
    glued = tmp_path / "old-way.jsonl"
    glued.write_bytes(log.read_bytes())
    with open(glued, "a") as handle:
        handle.write(json.dumps({"n": 3}) + "\n")
    assert [r["n"] for r in read_records(glued)] == [1]  # the old way lost record 3 as well

    append_record(log, {"n": 3})
    append_record(log, '{"n": 4}')
    lines = log.read_text().splitlines()
    assert lines[1] == '{"n": 2, "host": "gpu-' and json.loads(lines[2]) == {"n": 3}
    assert [r["n"] for r in read_records(log)] == [1, 3, 4]


def test_read_records_skips_unparsable_lines_and_says_so(tmp_path, caplog):
    log = tmp_path / "builds.jsonl"
    log.write_text('{"n": 1}\n[1, 2]\n\n{"n": 2}\n{"n": 3, "cut')
    assert [r["n"] for r in read_records(log)] == [1, 2]
    assert "skipped 2 unreadable line(s)" in caplog.text
    assert read_records(tmp_path / "missing.jsonl") == []


def test_a_record_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="one line"):
        append_record(tmp_path / "log.jsonl", "two\nlines")


def test_append_on_a_full_disk_leaves_a_cut_line_that_the_next_append_steps_over(tmp_path, record_property):
    """Needs a write that only partly fits: the patched disk gives one (tmpfs allocates
    whole pages, so a short record either fits or fails entirely there)."""
    with small_filesystem(tmp_path / "disk", 256 * KiB, "patched") as disk:
        record_property("filesystem", disk.kind)
        log = disk.path / "builds.jsonl"
        append_record(log, {"n": 1})
        disk.fill(leave=10)
        with pytest.raises(OSError) as caught:
            append_record(log, {"n": 2, "padding": "x" * 100})
        assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(log)
        assert not log.read_text().endswith("\n")  # the cut line is there
        disk.make_room()
        append_record(log, {"n": 3})
    assert [r["n"] for r in read_records(log)] == [1, 3]


# ------------------------------------------------------------------------- reservation
@pytest.mark.parametrize("kind", DISK_KINDS)
def test_reserve_space_allocates_now_or_raises_enospc(tmp_path, kind, record_property):
    with small_filesystem(tmp_path / "disk", 1 * MiB, kind) as disk:
        record_property("filesystem", disk.kind)
        path = disk.path / "array.npy"
        path.write_bytes(b"header")
        assert reserve_space(path, 6, 256 * KiB) == "fallocate"
        assert path.stat().st_blocks * 512 >= 256 * KiB
        with pytest.raises(OSError) as caught:
            reserve_space(disk.path / "array.npy", 6, 4 * MiB)
        assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)


def test_reserve_space_without_fallocate_fills_zeros_after_the_header(tmp_path, monkeypatch):
    """Filesystems or platforms without posix_fallocate (musl on some filesystems, macOS)."""
    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    path = tmp_path / "array.npy"
    path.write_bytes(b"header")
    assert reserve_space(path, 6, 10 * MiB + 3) == "zero-fill"
    data = path.read_bytes()
    assert data[:6] == b"header" and len(data) == 6 + 10 * MiB + 3 and not any(data[6:])
    assert path.stat().st_blocks * 512 >= 10 * MiB
    monkeypatch.delattr(os, "posix_fallocate")
    assert reserve_space(path, 6, 1 * MiB) == "zero-fill"
