"""The two README commands install what they need once: a second run installs nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_venv_is_up_to_date_after_install():
    # `make -q` exits 0 only if the target needs no work: the .venv stamp is newer than
    # pyproject.toml, so `make demo` / `make test` run now would install nothing.
    result = subprocess.run(["make", "-q", "venv"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, "make venv would reinstall: .venv stamp older than pyproject.toml"


def test_venv_target_would_rebuild_when_dependencies_change(tmp_path):
    # Same Makefile, a pyproject.toml newer than the stamp: make must want to reinstall.
    result = subprocess.run(
        ["make", "-q", "venv", "-W", "pyproject.toml"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 1
