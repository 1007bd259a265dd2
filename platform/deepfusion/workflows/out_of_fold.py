"""Cross-fitted (out-of-fold) train logits for fusion (``fusion.fit_data.source: out_of_fold``).

The train split is cut into ``folds`` folds of whole dialogues (stratified by label,
seeded: ``StratifiedGroupKFold``). For fold k a dataset is written beside the logit cache,
``<cache_dir>/<key>-oof<K>-seed<S>/data/fold<k>``: ``split=train`` holds the other folds'
rows, ``split=test`` fold k's, ``split=val`` is the original validation split (linked, not
copied). Both backbones are trained on it again from the train configs stored in their
checkpoints (``runs/<kind>_fold<k>``, Ray Train as any run), and the logit cache of that
dataset (``open_or_build``, Ray Data) holds fold k's logits from models that never saw it.
The folds' test logits together are the train split's out-of-fold logits.
``run_fusion_stage`` is the fusion stage with this step first where the config asks for it.

Everything is kept and reused: a finished fold run resumes to its end at once, a fold's
logit cache is found by its key, and ``oof.json`` marks the whole set done. A new
backbone checkpoint or a re-preprocessed dataset changes the folder's key.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from deepfusion import storage
from deepfusion.artifacts.checkpoint import TRAIN_CONFIG
from deepfusion.artifacts.dataset import ShardDataset
from deepfusion.artifacts.shards import MANIFEST
from deepfusion.config import ConfigError
from deepfusion.config.fusion import FusionConfig
from deepfusion.config.tracking import TrackingConfig
from deepfusion.config.train import TrainConfig
from deepfusion.fusion.fit_data import concat
from deepfusion.fusion.logit_cache import CACHE_CARD, LogitCache, SplitLogits, open_or_build
from deepfusion.fusion.tune import FusionOutcome, tune_fusion
from deepfusion.hashing import seed_from

log = logging.getLogger(__name__)
DONE = "oof.json"
BACKBONES = ("video_checkpoint", "audio_text_checkpoint")


def oof_dir(cfg: FusionConfig, cache: LogitCache) -> Path:
    return Path(cfg.cache_dir) / f"{cache.key}-oof{cfg.fit_data.folds}-seed{cfg.fit_data.seed}"


def assign_folds(table: pa.Table, folds: int, seed: int) -> np.ndarray:
    """Each row's fold: whole dialogues per fold (rows of one dialogue share speakers and
    context), label proportions kept as far as the groups allow."""
    from sklearn.model_selection import StratifiedGroupKFold

    labels = table.column("label").to_numpy()
    groups = (table.column("dialogue_id").to_pylist() if "dialogue_id" in table.column_names
              else table.column("sample_id").to_pylist())
    groups = np.array([str(g) if g is not None else sid for g, sid in
                       zip(groups, table.column("sample_id").to_pylist())], dtype=object)
    if len(set(groups)) < folds:
        raise ConfigError(f"fusion.fit_data.folds: {folds} folds, but the train split has only "
                          f"{len(set(groups))} dialogues")
    fold_of = np.empty(len(labels), dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        fold_of[held_out] = k
    return fold_of


def write_fold_dataset(data: ShardDataset, table: pa.Table, fold_of: np.ndarray, k: int, out: Path) -> Path:
    """The dataset of fold ``k``: train = the other folds, test = fold k, val = the original."""
    staging = out.with_name(out.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    label_names = data.label_names
    manifest = json.loads(json.dumps(data.manifest))
    manifest["dataset"] = f"{data.manifest['dataset']}_fold{k}"
    manifest["shards"] = {"val": data.manifest["shards"].get("val", [])}
    for split, rows in (("train", fold_of != k), ("test", fold_of == k)):
        part = table.filter(pa.array(rows))
        folder = staging / f"split={split}"
        folder.mkdir(parents=True)
        pq.write_table(part, folder / "part-0.parquet")
        labels = part.column("label").to_numpy()
        manifest["counts"][split] = {name: int((labels == i).sum()) for i, name in enumerate(label_names)}
        manifest["totals"][split] = int(len(labels))
        manifest["shards"][split] = [f"split={split}/part-0.parquet"]
    try:
        os.symlink(data.split_folder("val").resolve(), staging / "split=val", target_is_directory=True)
    except OSError:
        shutil.copytree(data.split_folder("val"), staging / "split=val")
    source_key = (manifest.get("freshness") or {}).get("key", "")
    fold_key = seed_from(source_key, f"fold{k}", json.dumps(fold_of.tolist()))
    manifest["freshness"] = {**(manifest.get("freshness") or {}), "key": f"{fold_key:016x}"}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def _fold_train_config(checkpoint: Path, fold_data: Path, runs: Path, k: int) -> TrainConfig:
    try:
        stored = json.loads((Path(checkpoint) / TRAIN_CONFIG).read_text())
    except FileNotFoundError:
        raise ConfigError(f"fusion.fit_data.source out_of_fold: {checkpoint} has no {TRAIN_CONFIG}, so its "
                          f"backbone cannot be trained again on the folds") from None
    cfg = TrainConfig.model_validate(stored)
    return cfg.model_copy(update={
        "data": fold_data, "evaluate_test": False,
        "run": cfg.run.model_copy(update={"storage_path": runs, "name": f"{cfg.model.kind}_fold{k}"})})


def out_of_fold_logits(cfg: FusionConfig, cache: LogitCache, *, tracking: TrackingConfig | None = None
                       ) -> SplitLogits:
    """The train split's out-of-fold logits (trains 2 x folds backbones the first time;
    Ray must be up)."""
    from deepfusion.training.trainer import train

    root = oof_dir(cfg, cache)
    done = root / DONE
    if done.exists():
        record = json.loads(done.read_text())
        caches = [Path(p) for p in record["fold_caches"]]
        if all((c / CACHE_CARD).exists() for c in caches):
            log.info("out-of-fold logits %s are current", root)
            return concat([LogitCache(c, json.loads((c / CACHE_CARD).read_text())).load("test") for c in caches])

    data = ShardDataset.open(cfg.data, field="fusion.data")
    table = pq.read_table(data.split_folder("train"))
    fold_of = assign_folds(table, cfg.fit_data.folds, cfg.fit_data.seed)
    parts, fold_caches, runs = [], [], []
    for k in range(cfg.fit_data.folds):
        fold_data = write_fold_dataset(data, table, fold_of, k, root / "data" / f"fold{k}")
        checkpoints = {}
        for field in BACKBONES:
            fold_cfg = _fold_train_config(getattr(cfg, field), fold_data, root / "runs", k)
            log.info("out-of-fold %d/%d: training %s on %d rows", k + 1, cfg.fit_data.folds,
                     fold_cfg.model.kind, int((fold_of != k).sum()))
            outcome = train(fold_cfg, data_resources=cfg.inference, tracking=tracking,
                            tags={"deepfusion.stage": "fusion-out-of-fold", "deepfusion.fold": str(k)})
            checkpoints[field] = outcome.best_checkpoint
            runs.append(str(outcome.run_dir))
        fold_cache, _ = open_or_build(cfg.model_copy(update={
            "data": fold_data, "cache_dir": root / "cache", **checkpoints}))
        parts.append(fold_cache.load("test"))
        fold_caches.append(str(fold_cache.folder))
    oof = concat(parts)
    if sorted(oof.sample_ids) != sorted(table.column("sample_id").to_pylist()):
        raise RuntimeError(f"{root}: the folds' logits do not cover the train split exactly once")
    done.write_text(json.dumps({"folds": cfg.fit_data.folds, "seed": cfg.fit_data.seed, "rows": len(oof),
                                "fold_caches": fold_caches, "runs": runs}, indent=2) + "\n")
    return oof


def run_fusion_stage(cfg: FusionConfig, *, fresh: bool = False, rebuild_cache: bool = False,
                     tracking: TrackingConfig | None = None, tags: dict | None = None) -> FusionOutcome:
    """The fusion stage (``fusion.tune.tune_fusion``), with the cross-fitted train logits made
    first when ``fit_data.source`` is ``out_of_fold``. Ray must be up."""
    out_of_fold = None
    if cfg.fit_data.source == "out_of_fold":
        remote = [f"fusion.{f}" for f in ("data", "video_checkpoint", "audio_text_checkpoint", "cache_dir")
                  if storage.is_uri(getattr(cfg, f))]
        if remote:
            raise ConfigError(f"{', '.join(remote)}: fit_data.source out_of_fold retrains the backbones per fold "
                              f"in folders on this machine and cannot use a storage URI yet; use a local "
                              f"folder (or fit_data.source: train / val_holdout on the store)")
        cache, _ = open_or_build(cfg, force=rebuild_cache)
        out_of_fold = out_of_fold_logits(cfg, cache, tracking=tracking)
        rebuild_cache = False
    return tune_fusion(cfg, fresh=fresh, rebuild_cache=rebuild_cache, tracking=tracking, tags=tags,
                       out_of_fold=out_of_fold)
