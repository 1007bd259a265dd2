"""Speaker-grouped cross-validation on REAL speech (RAVDESS + TESS): every clip tested once,
by a model that never heard its speaker; pooled figures add up from the folds."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
import yaml
from helpers import REPO_ROOT, run_cli

from deepfusion.config import load_config
from deepfusion.evaluation.metrics import classification_metrics
from deepfusion.workflows.crossval import crossval

CONFIG = REPO_ROOT / "configs" / "speech_crossval.yaml"
# eGeMAPS functionals + MLP: trains in seconds, so the real-data check can learn too
EGEMAPS_CONFIG = REPO_ROOT / "configs" / "speech_egemaps.yaml"


def fold_rows(fold_dir: Path) -> dict[str, list]:
    table = pads.dataset(sorted(map(str, fold_dir.glob("split=*/*.parquet"))), format="parquet",
                         partitioning="hive", partition_base_dir=str(fold_dir)).to_table(
        columns=["sample_id", "speaker", "split", "label"])
    return table.to_pydict()


@pytest.mark.usefixtures("ray_local")
def test_two_fold_speaker_crossval_tests_every_clip_once_pools_the_folds_and_learns(shared_data, tmp_path):
    experiment = load_config(EGEMAPS_CONFIG, [
        f"preprocess.output_dir={tmp_path / 'shards'}", "preprocess.datasets.0.folds.count=2",
        "preprocess.datasets.0.name=speech_cv", "preprocess.datasets.0.audio.opensmile.lld=false",
        f"train.data={tmp_path / 'shards' / 'speech_cv'}", f"train.run.storage_path={tmp_path / 'runs'}",
        "train.epochs=20", "train.early_stopping_patience=8",
    ])
    result = crossval(experiment)
    s = result.summary
    clips = len((shared_data / "speech" / "MANIFEST.csv").read_text().splitlines()) - 1

    tested = Counter()
    for k in range(2):
        rows = fold_rows(tmp_path / "shards" / f"speech_cv_fold{k}")
        assert len(rows["sample_id"]) == clips  # every clip is in every fold's dataset, in one split
        speakers_by_split = {split: {sp for sp, sl in zip(rows["speaker"], rows["split"]) if sl == split}
                             for split in ("train", "val", "test")}
        assert not speakers_by_split["test"] & (speakers_by_split["train"] | speakers_by_split["val"])
        assert not speakers_by_split["train"] & speakers_by_split["val"]
        tested.update(sid for sid, sl in zip(rows["sample_id"], rows["split"]) if sl == "test")
    assert len(tested) == clips and set(tested.values()) == {1}

    # The pooled matrix is the folds' test matrices added; its figures are recomputed from it.
    fold_matrices = [np.asarray(json.loads((Path(f["run_dir"]) / "evaluation" / "test_metrics.json").read_text())
                                ["confusion_matrix"]) for f in s["folds_detail"]]
    pooled = np.sum(fold_matrices, axis=0)
    assert np.array_equal(pooled, np.asarray(s["confusion_matrix"])) and pooled.sum() == clips
    assert s["pooled"] == classification_metrics(pooled, s["label_names"])
    assert s["per_fold_mean"]["accuracy"] == pytest.approx(np.mean([f["accuracy"] for f in s["folds_detail"]]))
    # Majority baseline: each fold's test clips all answered with that fold's most frequent train class.
    right = sum(m[s["label_names"].index(f["majority_class"])].sum()
                for m, f in zip(fold_matrices, s["folds_detail"]))
    assert s["baselines"]["majority_accuracy"] == pytest.approx(right / clips)
    assert s["baselines"]["chance_accuracy"] == pytest.approx(1 / 7)
    assert json.loads(result.metrics_path.read_text())["pooled"] == s["pooled"]
    # A short training on real clips of voices it never heard learns: well above both baselines
    # (5-fold runs of this config reach 46 % pooled accuracy, docs/results.md).
    assert s["pooled"]["accuracy"] > s["baselines"]["majority_accuracy"] + 0.10
    assert s["pooled"]["accuracy"] > 2 * s["baselines"]["chance_accuracy"]
    assert s["pooled"]["macro_f1"] > 0.25
    assert result.confusion_path.stat().st_size > 10_000


def test_crossval_cli_refuses_a_dataset_without_folds_before_ray_starts(tmp_path, capsys):
    import ray

    was_up = ray.is_initialized()
    config = yaml.safe_load(CONFIG.read_text())
    del config["preprocess"]["datasets"][0]["folds"]
    path = tmp_path / "no_folds.yaml"
    path.write_text(yaml.safe_dump(config))
    code, _, stderr = run_cli(["crossval", "--config", str(path)], capsys)
    assert code == 2, stderr[-2000:]
    assert "preprocess.datasets 'speech_cv': cross-validation needs a speech dataset with `folds" in stderr
    assert "Traceback" not in stderr
    assert ray.is_initialized() == was_up, "the job started Ray before refusing its config"
