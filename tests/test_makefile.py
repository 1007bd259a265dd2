"""The two README commands install what they need once: a second run installs nothing, a
changed pyproject.toml installs again. Checked on a copy of the Makefile with stamps the test
sets itself (``make -n`` prints what would run, running nothing), so neither the state of
this checkout's .venv nor the `make test` that runs the suite can decide the outcome."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import REPO_ROOT

STAMPS = (".venv/.deepfusion-installed", ".venv/.deepfusion-test-installed")


@pytest.fixture
def project(tmp_path) -> Path:
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    return tmp_path


def set_times(project: Path, pyproject: float, stamps: float) -> None:
    os.utime(project / "pyproject.toml", (pyproject, pyproject))
    for stamp in STAMPS:
        (project / stamp).touch()
        os.utime(project / stamp, (stamps, stamps))


def make(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", *args], cwd=project, capture_output=True, text=True, timeout=60)


def installs(output: str) -> list[str]:
    return [line for line in output.splitlines() if "pip install" in line]


def test_a_second_run_installs_nothing(project):
    set_times(project, pyproject=1_000_000, stamps=2_000_000)  # installed after the last change
    assert make(project, "-q", "venv").returncode == 0  # up to date
    for target in ("demo", "test", "test-fast", "lint"):
        dry = make(project, "-n", target)
        assert dry.returncode == 0, dry.stderr
        assert installs(dry.stdout) == [], (target, dry.stdout)


def test_a_changed_pyproject_installs_again_and_test_adds_its_extras(project):
    set_times(project, pyproject=2_000_000, stamps=1_000_000)  # pyproject.toml changed since
    assert make(project, "-q", "venv").returncode == 1  # make wants to reinstall
    demo = installs(make(project, "-n", "demo").stdout)
    assert any("-e ." in line for line in demo) and not any("[test]" in line for line in demo), demo
    for target in ("test", "test-fast"):
        assert any("'.[test]'" in line for line in installs(make(project, "-n", target).stdout)), target
