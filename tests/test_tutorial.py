"""docs/tutorials/own-corpus.md, run as written: its files are written and its commands run
in order (extracted from the page, not retyped) on a small synthetic corpus with five
classes of its own, and the served answer names exactly them. Then the exported model is
moved, the work/ tree it was trained in deleted, and the moved folder loaded in Python and
served: the same answer to 1e-6.

The ``deepfusion`` commands run in this process, on the session's Ray, which plays the
page's once-per-machine `ray start --head` (its one ``setup`` block, not run here). The
served address is the one `deepfusion serve` printed (the session's Serve keeps its port),
put into the page's curl command in place of the address it shows."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from helpers import REPO_ROOT, deploy, manifest_from_meld, run_cli

from deepfusion.config import validate_config
from deepfusion.config.serving import ServeSection

PAGE = REPO_ROOT / "docs" / "tutorials" / "own-corpus.md"
# The demo corpus's emotions -> the corpus's own five words
WORDS = {"neutral": "calm", "joy": "cheerful", "anger": "irritated", "disgust": "irritated", "sadness": "gloomy",
         "fear": "startled", "surprise": "startled"}
CLASSES = ["calm", "cheerful", "irritated", "gloomy", "startled"]
SHOWN_ADDRESS = "http://127.0.0.1:8000"


def page_steps(page: Path) -> list[tuple[str, str]]:
    """The page's files and commands in order: ``("file", name, text)`` for a ```yaml NAME
    block, ``("run", line)`` for each command of a ```bash block (not ```bash setup)."""
    steps = []
    for info, body in re.findall(r"^```([^\n]*)\n(.*?)^```", page.read_text(), flags=re.M | re.S):
        kind, _, name = info.strip().partition(" ")
        if kind == "yaml" and name:
            steps.append(("file", name, body))
        elif kind == "bash" and name != "setup":
            steps += [("run", line.strip(), "") for line in body.replace("\\\n", " ").splitlines()
                      if line.strip() and not line.strip().startswith("#")]
    return steps


@pytest.mark.usefixtures("ray_local")
def test_the_tutorial_takes_a_five_class_corpus_to_a_served_model(demo_corpus, serve_port, tmp_path, capsys,
                                                                   monkeypatch):
    from ray import serve

    from deepfusion.inference.emotion import EmotionRecognizer
    from deepfusion.ray_runtime import start_serve
    from deepfusion.serving.app import build_app

    monkeypatch.chdir(tmp_path)
    table = manifest_from_meld(demo_corpus / "meld", tmp_path / "my_corpus" / "manifest.csv", WORDS, copy_media=True)
    example = next(p for p in sorted((table.parent / "clips").glob("test-*.mp4")))
    shutil.copy(example, table.parent / "clips" / "example.mp4")
    start_serve("127.0.0.1", serve_port)  # the cluster's Serve, already up (as on a shared cluster)

    steps = page_steps(PAGE)
    assert [s[1].split()[:2] for s in steps if s[0] == "run"] == [
        ["deepfusion", "preprocess"], ["deepfusion", "train"], ["deepfusion", "train"], ["deepfusion", "tune"],
        ["deepfusion", "evaluate"], ["deepfusion", "predict"], ["deepfusion", "export"], ["deepfusion", "serve"],
        ["curl", "-s"]]
    printed, url, answer = {}, None, None
    try:
        for kind, text, body in steps:
            if kind == "file":
                (tmp_path / text).write_text(body)
                continue
            argv = shlex.split(text)
            if argv[0] == "deepfusion":
                code, out, err = run_cli(argv[1:], capsys)
                assert code == 0, f"{text}\n{out}\n{err}"
                printed[argv[1]] = out
                if argv[1] == "serve":
                    url = re.search(r"served at (\S+)", out).group(1)
            else:
                assert url is not None and SHOWN_ADDRESS in text
                done = subprocess.run(shlex.split(text.replace(SHOWN_ADDRESS, url)), capture_output=True, text=True,
                                      timeout=120, check=True)
                answer = json.loads(done.stdout)

        # every output names the corpus's five classes, in their declared order
        assert all(f" {name}" in printed["evaluate"] for name in CLASSES)
        assert list(answer["probabilities"]) == CLASSES and answer["emotion"] in CLASSES
        assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        models = requests.get(f"{url}/v1/models", timeout=30).json()
        assert set(models) == {"video", "audio_text", "fusion"} and models["fusion"]["labels"] == CLASSES

        serve.delete("deepfusion")  # one application at / at a time

        # the exported folder moves; the tree it was trained in goes
        moved = Path(shutil.move(tmp_path / "models" / "own-emotion", tmp_path / "elsewhere" / "emotion"))
        shutil.rmtree(tmp_path / "work")
        local = EmotionRecognizer.from_checkpoint(moved).predict(video=table.parent / "clips" / "example.mp4",
                                                                 text="Oh wow, really?")
        assert local["probabilities"] == pytest.approx(answer["probabilities"], abs=1e-6)
        again = deploy(build_app(validate_config(ServeSection, {"fusion_checkpoint": str(moved)})), "moved",
                       serve_port)
        response = requests.post(f"{again}/v1/emotion", timeout=60, data={"text": "Oh wow, really?"}, files={
            "video": ("example.mp4", (table.parent / "clips" / "example.mp4").read_bytes(), "video/mp4")})
        assert response.status_code == 200, response.text
        assert response.json()["probabilities"] == pytest.approx(answer["probabilities"], abs=1e-6)
    finally:
        for app in ("deepfusion", "moved"):
            if app in serve.status().applications:
                serve.delete(app)
