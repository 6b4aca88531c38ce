"""Installing the project changes no other pytest run in the environment: the plugin is loaded
by this repository's root conftest.py, not through an entry point, and its options are
namespaced `--claims-*`, so it coexists with pytest-profiling's `--profile`."""

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_in(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=folder,
                          capture_output=True, text=True, timeout=300)


def test_the_distribution_registers_no_pytest_plugin():
    entry_points = importlib.metadata.distribution("vit-local-claims").entry_points
    assert [ep for ep in entry_points if ep.group == "pytest11"] == []


def test_another_project_sees_no_claims_options(tmp_path):
    (tmp_path / "test_other.py").write_text("def test_ok():\n    assert True\n")
    help_text = pytest_in(tmp_path, "--help").stdout
    assert "--claims-" not in help_text and "vit-local-claims" not in help_text
    result = pytest_in(tmp_path, "-q")
    assert result.returncode == 0 and "1 passed" in result.stdout


def test_pytest_profiling_beside_it(tmp_path):
    pytest.importorskip("pytest_profiling", reason="pytest-profiling (the 'test' extra) is not installed")
    (tmp_path / "test_other.py").write_text("def test_ok():\n    assert True\n")
    other = pytest_in(tmp_path, "-q", "--profile")
    assert other.returncode == 0, other.stdout + other.stderr
    ours = pytest_in(ROOT, "claims/", "--co", "-q", "--profile", "--claims-profile", "smoke")
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert "38 tests collected" in ours.stdout
