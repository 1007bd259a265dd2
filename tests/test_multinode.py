"""Placement on a multi-node Ray cluster (``ray.cluster_utils.Cluster``): a head without
GPUs and two worker nodes advertising one GPU each, like cluster.yaml's RTX 3060 workers.
torch sees no CUDA here, so the models run on CPU; what is tested is where Ray puts them.

Three raylets, four Train workers, Tune trials and a Serve app on 2 cores: the session's
single-node Ray is paused for the module (its Serve app and actors go with it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections import Counter
from pathlib import Path

import pytest
import ray
import requests
from helpers import (
    bootstrap_file_set_aside,
    free_ports,
    kill_a_train_worker_after,
    ray_actors,
    save_backbone,
    start_local_ray,
)

from deepfusion.config import FusionConfig, TrainConfig, validate_config
from deepfusion.config.architectures import MimamoConfig, MultimodalLSTMConfig
from deepfusion.config.serving import ServeSection

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (1 CPU, no GPU) + two GPU worker nodes; this process's driver joins it. The
    session's single-node Ray, if up, is stopped for the module and started again after."""
    from ray.cluster_utils import Cluster

    session_ray = ray.is_initialized()
    if session_ray:
        ray.shutdown()
    # the test cluster records itself as "the local cluster": the session head's record is
    # set aside meanwhile, and put back, so jobs submitted to the head later still find it
    with bootstrap_file_set_aside():
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
        gpu_nodes = [cluster.add_node(num_cpus=2, num_gpus=1, resources={"rtx3060": 1}) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield {"head": cluster.head_node.node_id, "gpu_nodes": {n.node_id for n in gpu_nodes}, "cluster": cluster}
        ray.shutdown()
        cluster.shutdown()
    if session_ray:
        start_local_ray()


def placement(per_node: Counter, cluster: dict) -> dict:
    """Counts keyed by a readable node name (head, gpu-node-<id prefix>) for the log."""
    return {("head" if node == cluster["head"] else f"gpu-node-{node[:6]}"): count for node, count in per_node.items()}


@pytest.fixture(scope="module")
def shards(cluster, demo_shards) -> Path:
    """The session's demo shards (made on whichever Ray was up first)."""
    return demo_shards["root"]


def test_four_train_workers_at_half_a_gpu_place_two_per_gpu_node(cluster, shards, tmp_path):
    from deepfusion.training.trainer import train

    cfg = validate_config(TrainConfig, {
        "model": {"kind": "textile", "preset": "cpu-small"}, "data": str(shards / "textile"), "epochs": 1,
        "batch_size": 16, "evaluate_test": False,
        "scaling": {"num_workers": 4, "cpus_per_worker": 0.5, "gpus_per_worker": 0.5, "backend": "gloo"},
        "run": {"storage_path": str(tmp_path / "runs"), "name": "four"}})
    outcome = train(cfg)
    assert outcome.epochs_completed == 1 and outcome.worker_resources == {"CPU": 0.5, "GPU": 0.5}
    workers = ray_actors("TrainWorker")
    assert len(workers) == 4, workers
    per_node = Counter(w["node_id"] for w in workers)
    print("PLACEMENT train workers per node:", placement(per_node, cluster))
    assert set(per_node) == cluster["gpu_nodes"] and sorted(per_node.values()) == [2, 2], per_node


@pytest.fixture(scope="module")
def fusion_outcome(cluster, shards, tmp_path_factory):
    """Untrained backbones (placement, not accuracy, is under test) and a 4-trial search
    whose trials each take half a GPU: four run at once only by using both GPU nodes."""
    from deepfusion.artifacts.dataset import ShardDataset
    from deepfusion.fusion.tune import tune_fusion

    root = tmp_path_factory.mktemp("multinode_fusion")
    meld = ShardDataset.open(shards / "meld")
    video = save_backbone(root / "mimamo", meld, MimamoConfig(kind="mimamo", preset="cpu-small"), 0)
    audio_text = save_backbone(root / "lstm", meld, MultimodalLSTMConfig(kind="multimodal_lstm", preset="cpu-small"), 1)
    cfg = validate_config(FusionConfig, {
        "data": str(shards / "meld"), "video_checkpoint": str(video), "audio_text_checkpoint": str(audio_text),
        "cache_dir": str(root / "cache"), "export_dir": str(root / "fusion"),
        "training": {"max_epochs": 5},
        "search": {"num_samples": 4, "max_concurrent_trials": 4, "cpus_per_trial": 0.25, "gpus_per_trial": 0.5,
                   "reuse_actors": False, "verbose": 0, "storage_path": str(root / "tune"), "name": "spread"}})
    return tune_fusion(cfg), cfg


def test_tune_trials_spread_over_the_gpu_nodes(cluster, fusion_outcome):
    outcome, _ = fusion_outcome
    assert outcome.search.num_trials == 4 and outcome.search.num_errored == 0
    trials = ray_actors("ImplicitFunc")  # Tune's actor class for function trainables
    assert len(trials) == 4, trials
    per_node = Counter(t["node_id"] for t in trials)
    print("PLACEMENT tune trials per node:", placement(per_node, cluster))
    assert set(per_node) == cluster["gpu_nodes"] and sorted(per_node.values()) == [2, 2], per_node


def test_serve_replicas_land_where_their_resources_are(cluster, fusion_outcome, demo_corpus):
    from ray import serve

    from deepfusion.serving.app import build_app

    outcome, fusion_cfg = fusion_outcome
    cfg = validate_config(ServeSection, {
        "video_checkpoint": str(fusion_cfg.video_checkpoint),
        "audio_text_checkpoint": str(fusion_cfg.audio_text_checkpoint),
        "fusion_checkpoint": str(outcome.export_dir),
        "ingress": {"num_cpus": 0.25}, "fusion": {"num_cpus": 0.1},
        "video": {"num_cpus": 0.25, "num_gpus": 0.5, "num_replicas": 2},
        "audio_text": {"num_cpus": 0.25, "num_gpus": 0.5, "num_replicas": 2}})
    [port] = free_ports(1)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(cfg), name="deepfusion", route_prefix="/")
        alive = ray_actors("ServeReplica:deepfusion:", state="ALIVE")
        by_deployment = {name: [a["node_id"] for a in alive if a["class_name"].endswith(":" + name)]
                         for name in ("mimamo", "multimodal_lstm", "fusion", "ingress")}
        # four half-GPU replicas fill both cards: two per GPU node, none on the GPU-less head
        gpu_replicas = Counter(by_deployment["mimamo"] + by_deployment["multimodal_lstm"])
        print("PLACEMENT serve model replicas per node:", placement(gpu_replicas, cluster))
        assert set(gpu_replicas) == cluster["gpu_nodes"] and sorted(gpu_replicas.values()) == [2, 2], by_deployment
        assert len(by_deployment["fusion"]) == 1 and len(by_deployment["ingress"]) == 1
        clip = sorted((demo_corpus / "meld" / "test").glob("*.mp4"))[0]
        with open(clip, "rb") as video:
            response = requests.post(f"http://127.0.0.1:{port}/v1/emotion", timeout=120,
                                     files={"video": ("clip.mp4", video, "video/mp4")}, data={"text": "Hi!"})
        assert response.status_code == 200, response.text
        assert response.json()["individual_predictions"].keys() == {"video", "audio_text"}
    finally:
        serve.shutdown()



def test_a_gpu_node_lost_mid_training_the_run_finishes_on_the_other_from_the_buckets_checkpoint(
        cluster, shards, s3_store, tmp_path):
    """One Train worker on a whole GPU; after epoch 1's checkpoint is in the bucket, its
    node dies (every process of it killed). Ray Train starts the worker again on the other
    GPU node, from the bucket's checkpoint: no epoch is trained twice, the final checkpoint
    is whole. A replacement node joins afterwards, as an autoscaler would add one."""
    from deepfusion import storage
    from deepfusion.artifacts.checkpoint import read_card
    from deepfusion.training.trainer import train

    data = f"{s3_store}/multinode/shards/textile"
    storage.push(shards / "textile", data)
    nodes = {n.node_id: n for n in cluster["cluster"].worker_nodes}
    pids = {node_id: [info.process.pid for infos in node.all_processes.values() for info in infos]
            for node_id, node in nodes.items()}
    before = {a["actor_id"] for a in ray_actors("TrainWorker")}
    record = tmp_path / "lost.json"
    cfg = validate_config(TrainConfig, {
        "model": {"kind": "textile", "preset": "cpu-small"}, "data": data, "epochs": 3, "batch_size": 16,
        "early_stopping_patience": 3, "evaluate_test": False,
        "scaling": {"num_workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1, "backend": "gloo"},
        "run": {"storage_path": f"{s3_store}/multinode/runs", "name": "node_lost", "max_failures": 1}})
    try:
        outcome = train(cfg, callbacks=[kill_a_train_worker_after(1, record, pids_by_node=pids)])
    finally:  # the dead node leaves the cluster's books; a fresh one takes its place
        if record.is_file():
            lost = json.loads(record.read_text())["node"]
            cluster["cluster"].remove_node(nodes[lost], allow_graceful=False)
            fresh = cluster["cluster"].add_node(num_cpus=2, num_gpus=1, resources={"rtx3060": 1})
            cluster["gpu_nodes"].discard(lost)
            cluster["gpu_nodes"].add(fresh.node_id)
            cluster["cluster"].wait_for_nodes()
    lost = json.loads(record.read_text())
    assert lost["checkpoint"].endswith("checkpoint_epoch_0001") and lost["checkpoint"].startswith("deepfusion-test/")
    assert outcome.resumed_from == [1] and [m["epoch"] for m in outcome.history] == [1, 2, 3]
    workers = [a for a in ray_actors("TrainWorker") if a["actor_id"] not in before]
    print("PLACEMENT train worker before and after the node was lost:",
          [(a["node_id"][:6], a["state"]) for a in workers])
    assert {a["node_id"] for a in workers} == {lost["node"], *(set(nodes) - {lost["node"]})}
    assert read_card(outcome.best_checkpoint).label_names == ["clothes_dump", "textile_billboard", "textile_dye"]
    assert "checkpoint_epoch_0003/model.safetensors" in storage.files(f"{s3_store}/multinode/runs/node_lost")


def test_a_gpu_node_lost_mid_sweep_its_trials_start_again_and_no_finished_trial_reruns(
        cluster, fusion_outcome, s3_store):
    """A 4-trial sweep, two at a time, kept in the bucket; when the first trial finishes, the
    node of a running trial dies. Its trial starts again on what remains (search.max_failures),
    every trial finishes once, and the study holds one finished Optuna trial per Tune trial."""
    import optuna
    from ray import tune

    from deepfusion.fusion.study import load_study
    from deepfusion.fusion.tune import tune_fusion

    _, base = fusion_outcome
    cfg = base.model_copy(update={
        "export_dir": f"{s3_store}/multinode/fusion",
        "search": base.search.model_copy(update={"name": "node_lost", "storage_path": f"{s3_store}/multinode/tune",
                                                 "num_samples": 4, "max_concurrent_trials": 2,
                                                 "max_failures": 2})})
    nodes = {n.node_id: n for n in cluster["cluster"].worker_nodes}
    pids = {node_id: [info.process.pid for infos in node.all_processes.values() for info in infos]
            for node_id, node in nodes.items()}
    events = {"completed": [], "recovered": [], "lost": None}

    class LoseANode(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            events["completed"].append(trial.trial_id)
            # the node of a trial still running (not of the one that just finished)
            running = {t.temporary_state.ray_actor._actor_id.hex() for t in trials
                       if t is not trial and t.status == "RUNNING" and t.temporary_state.ray_actor is not None}
            alive = [a for a in ray_actors("ImplicitFunc", state="ALIVE")
                     if a["actor_id"] in running and a["node_id"] in pids]
            if events["lost"] is None and alive:
                events["lost"] = alive[0]["node_id"]
                for pid in pids[events["lost"]]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

        def on_trial_recover(self, iteration, trials, trial, **info):
            events["recovered"].append(trial.trial_id)

    try:
        outcome = tune_fusion(cfg, callbacks=[LoseANode()])
    finally:
        if events["lost"] is not None:
            cluster["cluster"].remove_node(nodes[events["lost"]], allow_graceful=False)
            fresh = cluster["cluster"].add_node(num_cpus=2, num_gpus=1, resources={"rtx3060": 1})
            cluster["gpu_nodes"].discard(events["lost"])
            cluster["gpu_nodes"].add(fresh.node_id)
            cluster["cluster"].wait_for_nodes()
    print("FAULT " + json.dumps({"fault": "node_lost_mid_sweep", **events}))
    assert events["lost"] is not None and events["recovered"], events
    assert outcome.search.num_trials == 4 and outcome.search.num_errored == 0
    assert sorted(events["completed"]) == sorted(set(events["completed"])) and len(events["completed"]) == 4
    study = load_study("node_lost", outcome.search.optuna_storage)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 4 == len(study.trials)
