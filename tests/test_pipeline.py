"""The one-command pipeline: stage records and skipping, up-front checks, and the whole
methodology end to end, submitted with `ray job submit`, then re-run after a change."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import (
    REPO_ROOT,
    free_ports,
    job_env,
    node_without_these_folders,
    run_in_own_session,
    wait_for_job,
)

from deepfusion.artifacts.freshness import StageLedger, content_key
from deepfusion.config import ConfigError, load_config
from deepfusion.workflows.pipeline_plan import plan_pipeline

DEMO = REPO_ROOT / "configs" / "demo.yaml"

# The demo pipeline at test size: a small synthetic corpus, one epoch per backbone, 4 trials.
SMALL = [
    "demo_data.dialogues.train=8", "demo_data.dialogues.dev=3", "demo_data.dialogues.test=3",
    "demo_data.image_scale=0.06", "preprocess.datasets.0.target_per_class=40",
    "preprocess.datasets.0.image_size=64", "preprocess.datasets.1.video.frame_size=48",
    'pipeline.train.0.overrides=["train.epochs=1"]', 'pipeline.train.1.overrides=["train.epochs=1"]',
    'pipeline.train.2.overrides=["train.epochs=1"]',
    'pipeline.fusion.overrides=["fusion.search.num_samples=4", "fusion.search.verbose=0"]',
]


def test_ledger_skips_resumes_or_starts_fresh_by_content(tmp_path):
    ledger = StageLedger(tmp_path)
    artifact = tmp_path / "model.bin"
    artifact.write_bytes(b"weights v1")
    inputs = {"config": {"epochs": 3}, "data": "abc"}

    def outputs():
        return {"model": artifact.read_bytes().hex()}

    assert ledger.decide("train/x", inputs, outputs) == "fresh"  # never ran
    ledger.started("train/x", inputs)
    assert ledger.decide("train/x", inputs, outputs) == "resume"  # started, never finished
    ledger.finished("train/x", inputs, outputs(), wall_s=1.0)
    assert ledger.decide("train/x", inputs, outputs) == "skip"
    assert ledger.decide("train/x", inputs | {"data": "abd"}, outputs) == "fresh"  # new upstream
    assert ledger.decide("train/x", {"data": "abc", "config": {"epochs": 3}}, outputs) == "skip"  # key order
    artifact.write_bytes(b"tampered")
    assert ledger.decide("train/x", inputs, outputs) == "resume"  # output no longer what it made
    artifact.unlink()
    assert ledger.decide("train/x", inputs, outputs) == "resume"
    record = json.loads((tmp_path / "stages" / "train__x.json").read_text())
    assert record["state"] == "done" and record["config"] == inputs["config"]
    assert record["inputs"] == {"data": "abc"} and record["key"] == content_key(inputs["config"], {"data": "abc"})


def test_the_demo_pipeline_file_loads_every_stage_file():
    experiment = load_config(DEMO)
    plan = plan_pipeline(experiment, DEMO)
    assert [cfg.run.name for _, cfg in plan.train] == ["textile", "mimamo", "multimodal_lstm"]
    assert plan.fusion[0] == DEMO.parent / "fusion.yaml"
    assert plan.serve[1].deploy


def test_a_stage_reading_what_no_stage_makes_is_refused_before_anything_runs(tmp_path):
    experiment = load_config(DEMO, ['pipeline.train.1.overrides=["train.data=work/nowhere/meld"]'])
    with pytest.raises(ConfigError, match=r"mimamo.yaml: train.data /\S*work/nowhere/meld is made by no earlier"):
        plan_pipeline(experiment, DEMO)
    experiment = load_config(DEMO, ['pipeline.train.2.overrides=["train.run.name=mimamo"]'])
    with pytest.raises(ConfigError, match="train.run.name 'mimamo' is also the run of"):
        plan_pipeline(experiment, DEMO)
    experiment = load_config(DEMO, ["pipeline.fusion.config=missing.yaml"])
    with pytest.raises(ConfigError, match="config file not found: .*configs/missing.yaml"):
        plan_pipeline(experiment, DEMO)


def test_a_fusion_its_data_cannot_feed_is_refused_before_anything_runs(tmp_path):
    """A corpus of recordings and transcripts (no video) cannot feed MIMAMO Net: the fusion
    stage on it is refused when the pipeline is planned, naming the dataset and what it
    lacks, not after both backbones have trained."""
    (tmp_path / "voices.csv").write_text("sample_id,audio,text,label\na,a.wav,hi,calm\nb,b.wav,oh,tense\n")
    (tmp_path / "pipeline.yaml").write_text(f"""
preprocess:
  output_dir: {tmp_path}/shards
  datasets:
    - {{kind: meld, name: clips, root: {tmp_path}/meld}}
    - {{kind: manifest, name: voices, manifest: {tmp_path}/voices.csv, classes: [calm, tense]}}
pipeline:
  state_dir: {tmp_path}/state
  train:
    - config: video.yaml
    - config: speech.yaml
  fusion: {{config: fusion.yaml}}
""")
    for name, kind, data in (("video", "mimamo", "clips"), ("speech", "multimodal_lstm", "voices")):
        (tmp_path / f"{name}.yaml").write_text(f"""
train:
  model: {{kind: {kind}, preset: cpu-small}}
  data: {tmp_path}/shards/{data}
  run: {{storage_path: {tmp_path}/runs, name: {name}}}
""")
    fusion = f"""
fusion:
  data: {tmp_path}/shards/DATA
  video_checkpoint: {tmp_path}/runs/video/best
  audio_text_checkpoint: {tmp_path}/runs/speech/best
  cache_dir: {tmp_path}/cache
  export_dir: {tmp_path}/fusion
"""
    (tmp_path / "fusion.yaml").write_text(fusion.replace("DATA", "voices"))
    with pytest.raises(ConfigError, match=r"fusion.yaml: fusion.video_checkpoint: mimamo needs video, and dataset "
                                          r"'voices' has none \(it carries \['audio', 'text'\]\)"):
        plan_pipeline(load_config(tmp_path / "pipeline.yaml"), tmp_path / "pipeline.yaml")
    assert not (tmp_path / "shards").exists() and not (tmp_path / "state").exists()
    (tmp_path / "fusion.yaml").write_text(fusion.replace("DATA", "clips"))  # the clips have every modality,
    with pytest.raises(ConfigError, match=r"fusion.audio_text_checkpoint is trained on dataset 'voices', classes "
                                          r"\['calm', 'tense'\], and fusion.data is 'clips', classes \['anger', "):
        plan_pipeline(load_config(tmp_path / "pipeline.yaml"), tmp_path / "pipeline.yaml")  # but other classes
    (tmp_path / "speech.yaml").write_text((tmp_path / "speech.yaml").read_text().replace("voices", "clips"))
    assert plan_pipeline(load_config(tmp_path / "pipeline.yaml"), tmp_path / "pipeline.yaml").fusion is not None


def _stage_lines(output: str) -> dict[str, str]:
    """The stage table the job prints: stage -> status."""
    statuses = {}
    for line in output.splitlines():
        parts = line.split()
        stage = len(parts) >= 2 and (parts[0] in {"demo_data", "preprocess", "fusion", "report", "serve"}
                                     or parts[0].startswith("train/"))
        if stage and parts[1] in {"ran", "resumed", "skipped", "up"}:
            statuses[parts[0]] = "up to date" if parts[1] == "up" else parts[1]
    return statuses


@pytest.fixture
def gpu_node_without_the_project(ray_head, session_head_gcs, tmp_path):
    """A worker node with one GPU joins the session head from its own mount namespace, where
    the project folder and the job's work folder (its corpus, MLflow's local store) are empty:
    the node has the installed software, none of the head's files (helpers). Its node-local
    storage mirror is its own. Yields (the work folder, the node's id)."""
    import ray.util.state

    work = tmp_path / "work_root"
    work.mkdir()
    env = job_env(DEEPFUSION_STORAGE_CACHE=str(tmp_path / "worker_node_cache"))
    with node_without_these_folders(session_head_gcs, [REPO_ROOT, work],
                                    tmp_path / "worker_node.log", env=env, num_cpus=1, num_gpus=1):
        nodes = ray.util.state.list_nodes(address=ray_head, detail=True)
        joined = [n.node_id for n in nodes if not n.is_head_node and n.state == "ALIVE"]
        assert len(joined) == 1, nodes
        yield work, joined[0]


@pytest.mark.usefixtures("ray_local")  # token auth on in this process, as the `ray` CLI does
@pytest.mark.timeout(1200)  # above the job's wait and the re-run's together: a hang shows the job's log
def test_pipeline_via_ray_job_submit_then_a_rerun_redoes_only_what_changed(ray_head, s3_store,
                                                                            gpu_node_without_the_project):
    """As on a cluster whose nodes share no disk: a GPU node that cannot see the head's
    project folder nor the job's work folder; the job ships its code as README says
    (deploy/runtime_env.yaml: the project as working_dir, the library as py_modules), its
    artifacts go to the bucket named by DEEPFUSION_STORAGE (given to the job as an
    environment variable, as cluster.env gives it to a cluster's nodes); the synthetic
    corpus and MLflow's local store are on the head only. Every Train worker (half a GPU)
    runs on the GPU node; the corpus is decoded where it is."""
    import ray.util.state
    from ray.job_submission import JobStatus, JobSubmissionClient

    from deepfusion import storage

    work, gpu_node = gpu_node_without_the_project
    store = f"{s3_store}/pipeline-job"
    (port,) = free_ports(1)
    # MLflow on for the whole pipeline: one experiment, its local SQLite store under work/
    # (the Serve app stays up for the dashboard check; the head goes with the fixture)
    # the GPU node's GPU is one Ray counts, not a CUDA device: DDP on gloo, as on a CPU
    small = [o.replace('"train.epochs=1"]', '"train.epochs=1", "train.scaling.backend=gloo"]') for o in SMALL]
    overrides = small + [f"pipeline.serve.url=http://127.0.0.1:{port}", "pipeline.serve.keep_running=true",
                         "tracking.mlflow=true", "tracking.experiment=demo-pipeline"]
    client = JobSubmissionClient(ray_head)
    shipped = yaml.safe_load((REPO_ROOT / "deploy" / "runtime_env.yaml").read_text())
    job_id = client.submit_job(
        # the `deepfusion` console script (= python -m jobs.pipeline): preprocess, train, tune, serve
        entrypoint="deepfusion pipeline --config configs/demo.yaml --workdir " + str(work) + " "
                   + " ".join(f"--set '{o}'" for o in overrides),
        # `ray job submit --runtime-env deploy/runtime_env.yaml`, its paths relative to the project
        runtime_env={"working_dir": str(REPO_ROOT / shipped["working_dir"]),
                     "py_modules": [str(REPO_ROOT / module) for module in shipped["py_modules"]],
                     "env_vars": {"RAY_DATA_DISABLE_PROGRESS_BARS": "1", "DEEPFUSION_STORAGE": store}},
    )
    status, logs = wait_for_job(client, job_id, timeout_s=600)
    assert status == JobStatus.SUCCEEDED, logs[-4000:]
    # Placement: each backbone's one Train worker ran on the GPU node, with its GPU
    workers = re.findall(r"worker rank 0/1: torch device cpu, Ray GPU ids \[0\], AMP off, node (\w+)", logs)
    assert set(workers) == {gpu_node} and len(workers) >= 3, workers
    driver = client.get_job_info(job_id).driver_info.id
    actors = ray.util.state.list_actors(address=ray_head, filters=[("class_name", "=", "RayTrainWorker")],
                                        detail=True, limit=10_000)
    assert sorted(a.node_id for a in actors if a.job_id == driver) == [gpu_node] * 3
    # the corpus, on the head only, was decoded on the head: not one sample lost to the GPU node
    for name in ("textile_demo", "meld_demo"):
        manifest = json.loads(storage.read_text(f"{store}/demo/shards/{name}/manifest.json"))
        assert manifest["quarantined"] == 0 and sum(manifest["totals"].values()) > 0, (name, manifest["totals"])
    assert _stage_lines(logs) == {"demo_data": "ran", "preprocess": "ran", "train/textile": "ran",
                                  "train/mimamo": "ran", "train/multimodal_lstm": "ran", "fusion": "ran",
                                  "report": "ran", "serve": "ran"}, logs[-4000:]
    # The workers' epoch lines reach the job's log, Ray Train's per-report metric dumps do not
    # (ray_runtime.quiet_ray_train_reports, which names Ray Train's internal loggers).
    assert re.search(r"epoch +1/\d+ +train loss", logs) and "Reporting training result" not in logs
    # the comparison table and where everything is
    for model in ("MIMAMO Net", "Multimodal LSTM", "Late Fusion", "Enhanced Late Fusion"):
        assert f"\n{model} " in logs
    assert f"report:          {store}/demo/pipeline/report.md" in logs
    # the journal's copy on the driver's node (the study itself is in the bucket)
    assert re.search(r"Optuna study: +/\S+/s3/deepfusion-test/pipeline-job/tune/fusion/optuna\.journal\n", logs)
    assert f"Tune results:    {store}/tune/fusion" in logs
    assert storage.is_file(f"{store}/tune/fusion/optuna.journal")
    summary = json.loads(storage.read_text(f"{store}/demo/pipeline/summary.json"))
    assert [row["model"] for row in summary["comparison"]] == ["MIMAMO Net", "Multimodal LSTM", "Late Fusion",
                                                               "Enhanced Late Fusion"]
    assert all(0 <= row["test_accuracy"] <= 1 and 0 <= row["test_weighted_f1"] <= 1
               for row in summary["comparison"])
    assert summary["synthetic"] is True and len(summary["backbones"]) == 3
    for key in ("fusion_report", "tune_results", "fusion_checkpoint"):
        assert summary["artifacts"][key].startswith(store + "/") and storage.exists(summary["artifacts"][key]), key
    assert not (work / "work" / "runs").exists() and not (work / "work" / "demo" / "shards").exists()
    assert {Path(p).name for p in summary["artifacts"]["plots"]} >= {"model_comparison.png", "optuna_history.png"}
    answer = summary["serve_response"]["response"]
    assert answer["emotion"] in answer["probabilities"] and len(answer["fusion_weights"]) == 2
    assert set(answer["individual_predictions"]) == {"video", "audio_text"}
    _check_tracking(work, store, summary, logs)
    _check_dashboard(ray_head, job_id)

    textile_before = _stage_record(store, "train__textile")
    lstm_before = _stage_record(store, "train__multimodal_lstm")
    fusion_before = _stage_record(store, "fusion")
    # A re-run with the LSTM trained longer: the LSTM and the fusion (its input) redo, nothing else.
    changed = [o for o in small if not o.startswith("pipeline.train.2")]
    changed += ['pipeline.train.2.overrides=["train.epochs=2", "train.scaling.backend=gloo"]',
                "pipeline.serve.deploy=false"]
    # `python -m jobs.pipeline` on this machine joins the session's head, as a user's would
    rerun = run_in_own_session([sys.executable, "-m", "jobs.pipeline", "--config", str(DEMO), "--workdir", str(work)]
                               + [arg for o in changed for arg in ("--set", o)],
                               env=job_env(DEEPFUSION_STORAGE=store), timeout=500)
    assert "joined the running Ray cluster" in rerun.stderr, rerun.stderr[-3000:]
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-4000:]
    # its LSTM trained on the GPU node too, from the library this driver sent (ray_runtime.connect)
    assert set(re.findall(r"Ray GPU ids \[0\], AMP off, node (\w+)", rerun.stdout + rerun.stderr)) == {gpu_node}
    assert _stage_lines(rerun.stdout) == {
        "demo_data": "up to date", "preprocess": "up to date", "train/textile": "skipped",
        "train/mimamo": "skipped", "train/multimodal_lstm": "ran", "fusion": "ran", "report": "ran"}, rerun.stdout
    assert _stage_record(store, "train__textile") == textile_before  # untouched
    assert _stage_record(store, "train__multimodal_lstm")["outputs"] != lstm_before["outputs"]
    fusion_after = _stage_record(store, "fusion")
    assert fusion_after["inputs"]["audio_text_checkpoint"] != fusion_before["inputs"]["audio_text_checkpoint"]
    assert fusion_after["inputs"]["video_checkpoint"] == fusion_before["inputs"]["video_checkpoint"]


def _check_tracking(work: Path, store: str, summary: dict, logs: str) -> None:
    """Where the pipeline's runs can be watched: each backbone's curves (PNG and TensorBoard
    events, in the bucket), and one MLflow experiment with every backbone run and every
    fusion trial."""
    from mlflow.tracking import MlflowClient

    from deepfusion import storage

    for backbone in summary["backbones"]:
        assert len(storage.read_bytes(backbone["curves_png"])) > 10_000, backbone
        assert any(f.startswith("val/events.out.tfevents.") for f in storage.files(backbone["tensorboard"])), backbone
    assert f"tensorboard --logdir {store}" in logs and "mlflow ui --backend-store-uri sqlite:///" in logs
    mlflow_store = f"sqlite:///{work / 'work' / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name("demo-pipeline")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    # one pipeline file for all (the job's copy of configs/demo.yaml in its working_dir)
    [pipeline_file] = {run.data.tags["deepfusion.pipeline"] for run in runs}
    assert pipeline_file.endswith("configs/demo.yaml")
    backbones = {run.info.run_name: run for run in runs if run.data.tags["deepfusion.stage"] == "train"}
    assert set(backbones) == {"textile", "mimamo", "multimodal_lstm"}
    for name, run in backbones.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags["checkpoint_path"] == f"{store}/runs/{name}/best"
        assert run.data.params["model.kind"] == name
        history = client.get_metric_history(run.info.run_id, "val_weighted_f1")
        assert [m.step for m in history] == [1]  # the one epoch each trained
        assert "test_weighted_f1" in run.data.metrics
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"training_curves.png", "test_confusion.png", "test_metrics.json"} <= artifacts
    trials = [run for run in runs if run.data.tags["deepfusion.stage"] == "fusion"]
    assert len(trials) == 4  # fusion.search.num_samples
    for trial in trials:
        assert {"lr", "batch_size", "video_weight", "focal_alpha", "focal_gamma"} <= set(trial.data.params)
        assert "best_val_weighted_f1" in trial.data.metrics
        assert trial.data.tags["checkpoint_path"].startswith(f"{store}/tune/fusion/")
        assert storage.files(trial.data.tags["checkpoint_path"])  # the trial's checkpoint, in the bucket


def _check_dashboard(address: str, job_id: str) -> None:
    """The Ray dashboard of a head started as README's "Watching a run" says (`ray start
    --head`, its own ports here): the page loads; its API wants Ray's token, which `ray
    get-auth-token` prints, and then shows the job, the node and the Serve app."""
    import requests

    page = requests.get(f"{address}/", timeout=30)
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert requests.get(f"{address}/api/jobs/", timeout=30).status_code == 401  # token auth is on
    token = subprocess.run([str(Path(sys.executable).parent / "ray"), "get-auth-token"], capture_output=True,
                           text=True, check=True).stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    jobs = requests.get(f"{address}/api/jobs/", headers=headers, timeout=30).json()
    [job] = [j for j in jobs if j["submission_id"] == job_id]
    assert job["status"] == "SUCCEEDED" and job["entrypoint"].startswith("deepfusion pipeline")
    nodes = requests.get(f"{address}/nodes?view=summary", headers=headers, timeout=30).json()
    assert nodes["result"] is True and len(nodes["data"]["summary"]) == 2  # the head and the GPU node
    serve_apps = requests.get(f"{address}/api/serve/applications/", headers=headers, timeout=30).json()
    assert serve_apps["applications"]["deepfusion"]["status"] == "RUNNING"
    assert {"ingress", "mimamo", "multimodal_lstm", "fusion"} <= set(
        serve_apps["applications"]["deepfusion"]["deployments"])
    # Serve's REST API (what `serve shutdown` calls) frees the head's CPUs for the re-run below
    assert requests.delete(f"{address}/api/serve/applications/", headers=headers, timeout=120).status_code == 200


def _stage_record(store: str, name: str) -> dict:
    from deepfusion import storage

    return json.loads(storage.read_text(f"{store}/demo/pipeline/stages/{name}.json"))


def test_demo_config_sizes_fit_the_2_core_budget():
    """`make demo` runs configs/demo.yaml: every stage file sizes Ray work in fractions
    of a CPU, so that the 2-core machine never waits on a whole-CPU request."""
    experiment = load_config(DEMO)
    plan = plan_pipeline(experiment, DEMO)
    assert experiment.preprocess.data.num_cpus < 1
    for _, cfg in plan.train:
        assert cfg.scaling.num_workers * cfg.scaling.cpus_per_worker <= 1
    assert plan.fusion[1].search.cpus_per_trial * plan.fusion[1].search.max_concurrent_trials <= 1
    serve = plan.serve[2]
    assert sum(s.num_cpus for s in (serve.ingress, serve.video, serve.audio_text, serve.fusion, serve.textile)) < 2
    assert yaml.safe_load(DEMO.read_text())["ray"]["num_cpus"] == 2
