"""The repository's platform/ folder must never shadow the standard-library ``platform``."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from helpers import REPO_ROOT, job_env

STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()

# What a fresh interpreter resolves, started in the repository root: there ``sys.path[0]`` is
# that folder, platform/ included.
PROBE = """
import json, os, platform, sys
import deepfusion
print("RESULT " + json.dumps({"file": platform.__file__, "system": platform.system(), "cwd": os.getcwd(),
                              "path0": sys.path[0], "deepfusion": deepfusion.__file__}))
"""


def result_of(output: str) -> dict:
    return json.loads(output.split("RESULT ", 1)[1].splitlines()[0])


def test_no_platform_package_in_the_repository():
    assert not (REPO_ROOT / "platform" / "__init__.py").exists()
    assert not (REPO_ROOT / "datasets" / "__init__.py").exists()
    assert not list((REPO_ROOT / "datasets").glob("*.py")), "datasets/ holds cards, never code"


def test_a_driver_started_in_the_repository_root_gets_the_standard_library():
    """A new interpreter whose first import path is the repository root (``python -c`` there,
    as ``python -m jobs.X`` is): ``platform`` is still the standard library's."""
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    info = result_of(done.stdout)
    assert info["path0"] in ("", str(REPO_ROOT)) and Path(info["cwd"]).resolve() == REPO_ROOT
    assert (Path(info["cwd"]) / "platform" / "deepfusion").is_dir()  # the folder is right there...
    assert Path(info["file"]).resolve().parent == STDLIB and info["system"] == "Linux"  # ...and not imported


DRIVER = """
import json, os, platform, ray
ray.init(address="auto", runtime_env={"working_dir": "."}, log_to_driver=False)

@ray.remote(num_cpus=0.1)
def probe():
    import platform
    import deepfusion
    return {"file": platform.__file__, "system": platform.system(), "cwd": os.getcwd(),
            "deepfusion": deepfusion.__file__}

print("RESULT " + json.dumps({"driver": {"file": platform.__file__, "system": platform.system()},
                              "task": ray.get(probe.remote(), timeout=180)}))
"""


@pytest.mark.usefixtures("ray_head")
def test_ray_task_with_repo_working_dir_gets_the_standard_library():
    """A driver started from the repository root ships it as the job's working_dir to the
    session's head; its task runs inside that copy."""
    result = subprocess.run([sys.executable, "-c", DRIVER], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=300, env=job_env())
    assert result.returncode == 0, result.stderr[-3000:]
    info = result_of(result.stdout)
    driver, task = info["driver"], info["task"]
    assert Path(driver["file"]).resolve().parent == STDLIB and driver["system"] == "Linux"
    # The task runs inside the uploaded copy of the repository, platform/ folder included...
    assert (Path(task["cwd"]) / "platform" / "deepfusion").is_dir()
    assert Path(task["cwd"]).resolve() != REPO_ROOT
    # ...and still imports the standard library's platform module.
    assert Path(task["file"]).resolve().parent == STDLIB
    assert task["system"] == "Linux"
    assert task["deepfusion"].endswith("deepfusion/__init__.py")
