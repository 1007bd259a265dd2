"""The repository's platform/ folder must never shadow the standard-library ``platform``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()


def describe_platform() -> dict:
    import platform  # noqa: PLC0415 - the point is what this import resolves to

    import deepfusion

    return {"file": platform.__file__, "system": platform.system(), "cwd": os.getcwd(),
            "deepfusion": deepfusion.__file__}


def test_no_platform_package_in_the_repository():
    assert not (REPO_ROOT / "platform" / "__init__.py").exists()
    assert not (REPO_ROOT / "datasets" / "__init__.py").exists()
    assert not list((REPO_ROOT / "datasets").glob("*.py")), "datasets/ holds cards, never code"


def test_driver_gets_the_standard_library(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    info = describe_platform()
    assert Path(info["file"]).resolve().parent == STDLIB
    assert info["system"] == "Linux"


DRIVER = """
import json, os, platform, ray
ray.init(address="local", num_cpus=1, include_dashboard=False, runtime_env={"working_dir": "."})

@ray.remote
def probe():
    import platform
    import deepfusion
    return {"file": platform.__file__, "system": platform.system(), "cwd": os.getcwd(),
            "deepfusion": deepfusion.__file__}

print("RESULT " + json.dumps({"driver": {"file": platform.__file__, "system": platform.system()},
                              "task": ray.get(probe.remote(), timeout=180)}))
"""


def test_ray_task_with_repo_working_dir_gets_the_standard_library():
    """A driver started from the repository root ships it as the job's working_dir."""
    result = subprocess.run([sys.executable, "-c", DRIVER], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.split("RESULT ", 1)[1])
    driver, task = info["driver"], info["task"]
    assert Path(driver["file"]).resolve().parent == STDLIB and driver["system"] == "Linux"
    # The task runs inside the uploaded copy of the repository, platform/ folder included...
    assert (Path(task["cwd"]) / "platform" / "deepfusion").is_dir()
    assert Path(task["cwd"]).resolve() != REPO_ROOT
    # ...and still imports the standard library's platform module.
    assert Path(task["file"]).resolve().parent == STDLIB
    assert task["system"] == "Linux"
    assert task["deepfusion"].endswith("deepfusion/__init__.py")
