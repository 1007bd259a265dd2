"""Typed configuration: YAML in configs/, unknown keys and bad values named in the error."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from deepfusion.config import ConfigError, ExperimentConfig, PreprocessConfig, load_config, validate_config
from deepfusion.config.serving import ServeSection

REPO_ROOT = Path(__file__).resolve().parents[1]


SHIPPED = sorted((REPO_ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_validates_and_has_a_job(path):
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    jobs = [cfg.preprocess, cfg.train, cfg.fusion, cfg.serve, cfg.predict, cfg.faces]
    assert any(section is not None for section in jobs), f"{path.name} configures no job"
    if cfg.preprocess is not None:
        assert cfg.preprocess.datasets


def _shards_written_by_shipped_configs() -> set[Path]:
    written = set()
    for path in SHIPPED:
        cfg = load_config(path)
        if cfg.preprocess is not None:
            written |= {cfg.preprocess.output_dir / ds.name for ds in cfg.preprocess.datasets}
    return written


TRAINING = [p for p in SHIPPED if "\ntrain:" in p.read_text()]


FUSION = [p for p in SHIPPED if "\nfusion:" in p.read_text()]


def test_training_configs_are_found():
    assert {p.name for p in TRAINING} >= {"textile.yaml", "mimamo.yaml", "multimodal_lstm.yaml"}


@pytest.mark.parametrize("path", TRAINING, ids=lambda p: p.name)
def test_every_training_config_reads_shards_a_shipped_config_writes(path):
    assert load_config(path).train.data in _shards_written_by_shipped_configs()


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


BASE = """
preprocess:
  output_dir: out
  datasets:
    - kind: image_folder
      name: textile
      root: data
"""


def test_unknown_key_is_rejected_with_its_dotted_name(tmp_path):
    path = write(tmp_path, BASE + "      imagesize: 64\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "preprocess.datasets.0.imagesize" in str(err.value)
    assert "Extra inputs are not permitted" in str(err.value)


def test_bad_value_is_rejected_with_key_and_value(tmp_path):
    path = write(tmp_path, BASE + "      image_size: -3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "preprocess.datasets.0.image_size" in str(err.value)
    assert "-3" in str(err.value)


def test_unknown_top_level_section_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="tranin"):
        load_config(write(tmp_path, BASE + "tranin: {}\n"))


def test_split_ratios_must_sum_to_one(tmp_path):
    path = write(tmp_path, BASE + "      split: {train: 0.8, val: 0.15, test: 0.15}\n")
    with pytest.raises(ConfigError, match=r"split.*must be 1.0"):
        load_config(path)


def test_unknown_dataset_kind_names_the_allowed_kinds(tmp_path):
    path = write(tmp_path, BASE.replace("image_folder", "videos"))
    with pytest.raises(ConfigError, match="image_folder.*meld.*speech"):
        load_config(path)


def test_speech_label_map_must_target_task_emotions(tmp_path):
    path = write(tmp_path, BASE.replace("kind: image_folder", "kind: speech")
                 + "      label_map: {happy: happiness}\n")
    with pytest.raises(ConfigError, match="happiness"):
        load_config(path)


def test_overrides_and_env_expansion(tmp_path, monkeypatch):
    monkeypatch.setenv("DF_TEST_ROOT", "/data/textile")
    path = write(tmp_path, BASE.replace("root: data", "root: ${DF_TEST_ROOT}"))
    cfg = load_config(path, ["preprocess.datasets.0.image_size=48", "preprocess.output_dir=/tmp/o"])
    dataset = cfg.preprocess.datasets[0]
    assert (dataset.image_size, str(dataset.root), str(cfg.preprocess.output_dir)) == (
        48, "/data/textile", "/tmp/o")


def test_env_default_and_missing_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("DF_UNSET", raising=False)
    path = write(tmp_path, BASE.replace("root: data", "root: ${DF_UNSET:-fallback}"))
    # relative paths are made absolute against the working folder (Ray workers do not share it)
    assert load_config(path).preprocess.datasets[0].root == Path.cwd() / "fallback"
    path = write(tmp_path, BASE.replace("root: data", "root: ${DF_UNSET}"))
    with pytest.raises(ConfigError, match="DF_UNSET"):
        load_config(path)


def test_override_into_a_missing_list_index_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="'5' is not an index"):
        load_config(write(tmp_path, BASE), ["preprocess.datasets.5.root=x"])


def test_config_is_immutable():
    cfg = validate_config(PreprocessConfig, {"output_dir": "o", "datasets": [
        {"kind": "image_folder", "name": "t", "root": "r"}]})
    with pytest.raises(ValidationError, match="frozen"):
        cfg.output_dir = "elsewhere"


def test_job_needs_its_section(tmp_path):
    cfg = load_config(write(tmp_path, "ray: {num_cpus: 1}\n"))
    with pytest.raises(ConfigError, match="needs a 'preprocess' section"):
        cfg.require("preprocess", "exp.yaml")


@pytest.mark.parametrize("path", FUSION, ids=lambda p: p.name)
def test_fusion_configs_fuse_backbones_trained_by_shipped_configs(path):
    fusion = load_config(path).fusion
    trained = {}
    for other in TRAINING:
        train = load_config(other).train
        trained[train.run.storage_path / train.run.name / "best"] = (train.model.kind, train.data)
    assert trained[fusion.video_checkpoint] == ("mimamo", fusion.data)
    assert trained[fusion.audio_text_checkpoint] == ("multimodal_lstm", fusion.data)


def test_serve_config_serves_what_the_shipped_jobs_export():
    serve = load_config(REPO_ROOT / "configs" / "serve.yaml").serve
    fusion = load_config(REPO_ROOT / "configs" / "fusion.yaml").fusion
    trained = {}
    for path in TRAINING:
        train = load_config(path).train
        trained[train.run.storage_path / train.run.name / "best"] = train.model.kind
    assert (serve.video_checkpoint, serve.audio_text_checkpoint) == (fusion.video_checkpoint,
                                                                      fusion.audio_text_checkpoint)
    assert serve.fusion_checkpoint == fusion.export_dir
    assert trained[serve.textile_checkpoint] == "textile"
    # a queue length Serve would refuse when deploying is refused when the file is read
    with pytest.raises(ConfigError, match=r"serve\.ingress\.max_queued_requests.*-1 for no limit"):
        load_config(REPO_ROOT / "configs" / "serve.yaml", ["serve.ingress.max_queued_requests=0"])
    # admission must refuse before Serve's own limit holds requests back in the proxy
    assert serve.admission.max_in_flight < serve.ingress.max_ongoing_requests
    with pytest.raises(ConfigError, match=r"max_in_flight \(32\) must be below serve\.ingress\.max_ongoing_requests"):
        load_config(REPO_ROOT / "configs" / "serve.yaml", ["serve.admission.max_in_flight=32"])
    # sizing only the ingress's CPUs keeps the ingress's own request limit above admission's
    sized = validate_config(ServeSection, {**serve.model_dump(mode="json", exclude={"ingress"}),
                                           "ingress": {"num_cpus": 0.5}})
    assert sized.ingress.max_ongoing_requests == 32 > sized.admission.max_in_flight


def test_tracking_is_tensorboard_by_default_and_mlflow_on_request(tmp_path):
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    plain = load_config(demo, base=tmp_path).tracking
    assert plain.tensorboard and plain.tracking_uri is None  # MLflow is opt-in
    local = load_config(demo, ["tracking.mlflow=true"], base=tmp_path).tracking
    assert local.tracking_uri == f"sqlite:///{tmp_path / 'work' / 'mlflow' / 'mlflow.db'}"
    assert local.artifact_location == (tmp_path / "work" / "mlflow" / "artifacts").as_uri()
    server = load_config(demo, ["tracking.mlflow_uri=http://mlflow:5000"], base=tmp_path).tracking
    assert server.mlflow and server.tracking_uri == "http://mlflow:5000" and server.artifact_location is None
    with pytest.raises(ConfigError, match="tracking.experiment"):
        load_config(demo, ["tracking.experiment="], base=tmp_path)


def test_mlflow_tracking_without_mlflow_installed_is_refused_when_the_config_is_read():
    """`make demo`'s environment has no MLflow (it comes with the `tracking` and `test`
    extras): turning it on there must fail at once, saying what to install, not minutes
    into a job. A fresh interpreter whose import system refuses `mlflow` stands for it."""
    script = textwrap.dedent("""
        import importlib.abc, sys
        class NoMlflow(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] == "mlflow":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, NoMlflow())
        from deepfusion.config import ConfigError, load_config
        assert load_config("configs/demo.yaml").tracking.mlflow is False  # off: nothing to install
        try:
            load_config("configs/demo.yaml", ["tracking.mlflow=true"])
        except ConfigError as err:
            print(err)
        else:
            print("accepted")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "tracking.mlflow is on but MLflow is not installed" in done.stdout
    assert "pip install -e '.[tracking]'" in done.stdout
