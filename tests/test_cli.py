"""The `deepfusion` command and the Python API a user meets first."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT, demo_clip

from jobs.cli import COMMANDS, main

DEEPFUSION = str(Path(sys.executable).parent / "deepfusion")


def test_the_console_script_lists_every_job_and_each_has_its_help(capsys):
    listing = subprocess.run([DEEPFUSION, "--help"], capture_output=True, text=True, timeout=120, cwd="/")
    assert listing.returncode == 0, listing.stderr
    for name in ("preprocess", "train", "tune", "evaluate", "predict", "crossval", "pipeline", "serve"):
        assert re.search(rf"^  {name} +\S", listing.stdout, re.MULTILINE), (name, listing.stdout)
    for name, module in COMMANDS.items():
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
        usage = capsys.readouterr().out
        # the job's own options, under the command's name
        assert usage.startswith(f"usage: deepfusion {name} "), usage[:200]
        assert "--config" in usage or "--checkpoint" in usage
        assert usage.count("\n") > 5, (module, usage)
    with pytest.raises(SystemExit) as exit_:
        main(["trian"])
    assert exit_.value.code == 2 and "unknown command 'trian'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--config", "no/such.yaml"])
    assert exit_.value.code == 2 and "config file not found: no/such.yaml" in capsys.readouterr().err


def test_the_readme_python_api_snippet_runs(served, tmp_path, monkeypatch, capsys):
    """README's snippet, as written, in a folder laid out as `make demo` leaves one (run in
    this process, as a script's top level: the API needs no Ray)."""
    snippet = re.search(r"<!-- api-snippet -->\n```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(),
                        re.DOTALL).group(1)
    cfg = served["cfg"]
    for folder, checkpoint in (("work/fusion", cfg.fusion_checkpoint), ("work/runs/textile", cfg.textile_checkpoint)):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "best").symlink_to(checkpoint)
    clip = re.search(r'video="([^"]+)"', snippet).group(1)
    photo = re.search(r'predict\("([^"]+\.jpg)"\)', snippet).group(1)
    (tmp_path / clip).parent.mkdir(parents=True)
    shutil.copy(demo_clip(served), tmp_path / clip)
    (tmp_path / photo).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(sorted((served["demo"] / "textile").rglob("*.jpg"))[0], tmp_path / photo)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    exec(compile(snippet, "README.md (api-snippet)", "exec"), {"__name__": "__main__"})
    lines = capsys.readouterr().out.splitlines()
    emotions = "anger|disgust|fear|joy|neutral|sadness|surprise"
    assert re.fullmatch(rf"({emotions}) 0\.\d+ \{{'video': '({emotions})', 'audio_text': '({emotions})'\}} "
                        r"\[0\.6, 0\.4\]", lines[0]), lines
    assert lines[1] in ("clothes_dump", "textile_dye", "textile_billboard"), lines
