"""The pipeline's stages, read and cross-checked before any of them runs.

A pipeline file names the stage files (training runs, the fusion search, the Serve app);
``plan_pipeline`` loads every one of them and checks that each stage's inputs are made
by an earlier stage or already exist, and that every model can learn from the data it is
given (its layout and the modalities it reads), so that a typo or an impossible stage fails
in a second, not after an hour of training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deepfusion import storage
from deepfusion.config import ConfigError, ExperimentConfig, load_config
from deepfusion.config.fusion import FusionConfig
from deepfusion.config.pipeline import PipelineConfig, ServeStage, StageFile
from deepfusion.config.serving import ServeSection
from deepfusion.config.train import TrainConfig
from deepfusion.models import model_inputs, model_spec


@dataclass(frozen=True)
class PipelinePlan:
    source: Path  # the pipeline file
    experiment: ExperimentConfig  # its own sections (ray, demo_data, preprocess, pipeline)
    pipeline: PipelineConfig
    train: list[tuple[Path, TrainConfig]]  # (stage file, its train section), in order
    fusion: tuple[Path, FusionConfig] | None
    serve: tuple[Path, ServeStage, ServeSection] | None

    def best_checkpoint(self, cfg: TrainConfig) -> storage.Location:
        return storage.join(cfg.run.storage_path, cfg.run.name, "best")


def stage_file_path(ref: StageFile, pipeline_file: Path) -> Path:
    """Stage files are found relative to the pipeline file, as an include would be."""
    return ref.config if ref.config.is_absolute() else Path(pipeline_file).parent / ref.config


def _load_section(ref: StageFile, pipeline_file: Path, section: str):
    path = stage_file_path(ref, pipeline_file)
    return path, load_config(path, ref.overrides).require(section, str(path))


def plan_pipeline(experiment: ExperimentConfig, source: Path) -> PipelinePlan:
    pipeline = experiment.require("pipeline", str(source))
    if pipeline.make_demo_data:
        experiment.require("demo_data", f"{source} (pipeline.make_demo_data)")
    if pipeline.preprocess:
        experiment.require("preprocess", f"{source} (pipeline.preprocess)")
    train = [_load_section(ref, source, "train") for ref in pipeline.train]
    fusion = _load_section(pipeline.fusion, source, "fusion") if pipeline.fusion else None
    serve = None
    if pipeline.serve is not None:
        serve_path, serve_section = _load_section(pipeline.serve, source, "serve")
        serve = (serve_path, pipeline.serve, serve_section)
    plan = PipelinePlan(Path(source), experiment, pipeline, train, fusion, serve)
    _check_inputs(plan)
    _check_models_fit_data(plan)
    return plan


def _check_inputs(plan: PipelinePlan) -> None:
    """Every dataset and checkpoint a stage reads is made by an earlier stage or exists."""
    made: set[str] = set(_preprocessed(plan))

    def need(path: storage.Location, what: str, stage_file: Path, hint: str) -> None:
        if storage.canonical(path) not in made and not storage.exists(path):
            raise ConfigError(f"{stage_file}: {what} {path} is made by no earlier pipeline stage and does not "
                              f"exist; {hint}")

    names: dict[str, Path] = {}
    for path, cfg in plan.train:
        if cfg.run.name in names:
            raise ConfigError(f"{path}: train.run.name {cfg.run.name!r} is also the run of {names[cfg.run.name]}; "
                              f"each training stage needs its own run")
        names[cfg.run.name] = path
        need(cfg.data, "train.data", path, f"add it to {plan.source}'s preprocess section")
        made.add(storage.canonical(plan.best_checkpoint(cfg)))
    if plan.fusion is not None:
        path, cfg = plan.fusion
        need(cfg.data, "fusion.data", path, f"add it to {plan.source}'s preprocess section")
        for field in ("video_checkpoint", "audio_text_checkpoint"):
            need(getattr(cfg, field), f"fusion.{field}", path, "train it in an earlier stage (pipeline.train)")
        made.add(storage.canonical(cfg.export_dir))
    if plan.serve is not None:
        path, _, cfg = plan.serve
        for field in ("video_checkpoint", "audio_text_checkpoint", "fusion_checkpoint", "textile_checkpoint"):
            if getattr(cfg, field) is not None:
                need(getattr(cfg, field), f"serve.{field}", path, "make it in an earlier stage")


def _check_models_fit_data(plan: PipelinePlan) -> None:
    """Each training stage's model, and both fusion backbones, can read their dataset: its
    layout is one the model learns from and it has the modalities the model needs. A
    dataset this pipeline preprocesses is judged from its config and layout (a manifest's
    columns); one that exists from its shards' manifest, as training itself checks it."""
    from deepfusion.artifacts.checkpoint import read_card
    from deepfusion.artifacts.dataset import ShardDataset
    from deepfusion.artifacts.shards import MANIFEST
    from deepfusion.fusion.logit_cache import BACKBONE_KINDS
    from deepfusion.preprocess.datasets import dataset_modalities

    made = _preprocessed(plan)

    def check(model_cfg, data: storage.Location, stage_file: Path, field: str) -> None:
        dataset = made.get(storage.canonical(data))
        if dataset is None:
            if storage.is_file(storage.join(data, MANIFEST)):
                ShardDataset.open(data, field=f"{stage_file}: {field}").resolve_model_config(
                    model_cfg, field=f"{stage_file}: {field}")
            return
        kind, spec = dataset.kind, model_spec(model_cfg.kind)
        if kind not in spec.datasets:
            raise ConfigError(f"{stage_file}: {field}: a {model_cfg.kind} model cannot learn from dataset "
                              f"{dataset.name!r} (a {kind} dataset; expected {' or '.join(spec.datasets)})")
        have, wants = dataset_modalities(dataset), model_inputs(model_cfg)
        for modality in ("image", "video", "audio"):
            if wants.get(modality) and modality not in have:
                raise ConfigError(f"{stage_file}: {field}: {model_cfg.kind} needs {modality}, and dataset "
                                  f"{dataset.name!r} has none (it carries {sorted(have) or 'nothing'})")

    trained = {storage.canonical(plan.best_checkpoint(cfg)): cfg.model for _, cfg in plan.train}
    trained_on = {storage.canonical(plan.best_checkpoint(cfg)): made.get(storage.canonical(cfg.data))
                  for _, cfg in plan.train}
    for path, cfg in plan.train:
        check(cfg.model, cfg.data, path, "train.model")
    if plan.fusion is None:
        return
    path, cfg = plan.fusion
    for field, kind in BACKBONE_KINDS.items():
        folder = getattr(cfg, field)
        model_cfg = trained.get(storage.canonical(folder))
        if model_cfg is None and storage.is_dir(folder):
            model_cfg = read_card(folder).model_config
        if model_cfg is None:
            continue
        if model_cfg.kind != kind:
            raise ConfigError(f"{path}: fusion.{field}: {folder} is a {model_cfg.kind} model; the fusion's "
                              f"{field.removesuffix('_checkpoint')} input is a {kind}")
        check(model_cfg, cfg.data, path, f"fusion.{field}")
        source, fused = trained_on.get(storage.canonical(folder)), made.get(storage.canonical(cfg.data))
        if source is not None and fused is not None and hasattr(source, "class_names") and \
                list(source.class_names) != list(fused.class_names):
            raise ConfigError(f"{path}: fusion.{field} is trained on dataset {source.name!r}, classes "
                              f"{list(source.class_names)}, and fusion.data is {fused.name!r}, classes "
                              f"{list(fused.class_names)}: logits of other classes cannot be fused")


def _preprocessed(plan: PipelinePlan) -> dict:
    """The datasets this pipeline preprocesses, by the folder their shards go to (canonical)."""
    if not plan.pipeline.preprocess:
        return {}
    pre = plan.experiment.preprocess
    return {storage.canonical(storage.join(pre.output_dir, d.name)): d for d in pre.datasets}
