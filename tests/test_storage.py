"""Every artifact on a storage URI: an S3-compatible server on loopback (``s3_store``,
moto's server mode) stands in for S3, GCS or MinIO. Shards, training runs, the fusion
sweep, exports, predictions and the Serve app read and write the bucket; nothing of the
project's ``work/`` is used."""

from __future__ import annotations

import json

import pytest
from helpers import DEMO_MELD, DEMO_TEXTILE, image_dataset, meld_dataset, preprocess_config

from deepfusion import storage


@pytest.fixture(scope="module")
def bucket_shards(s3_store, demo_corpus, ray_local) -> dict:
    """The demo corpus preprocessed into the bucket."""
    from deepfusion.preprocess.datasets import preprocess

    out = f"{s3_store}/shards"
    cfg = preprocess_config(out, meld_dataset(demo_corpus / "meld", **DEMO_MELD),
                            image_dataset(demo_corpus / "textile", **DEMO_TEXTILE))
    results = preprocess(cfg)
    return {"cfg": cfg, "results": {r.name: r for r in results}, "meld": f"{out}/meld", "textile": f"{out}/textile"}


def test_preprocess_writes_shards_and_manifest_to_the_bucket(bucket_shards, demo_shards):
    from deepfusion.artifacts.dataset import ShardDataset
    from deepfusion.preprocess.datasets import preprocess

    files = storage.files(bucket_shards["meld"])
    manifest = json.loads(storage.read_text(f"{bucket_shards['meld']}/manifest.json"))
    assert set(manifest["shards"]["train"]) <= set(files) and "quarantine.jsonl" in files
    local = json.loads((demo_shards["meld"] / "manifest.json").read_text())
    assert manifest["totals"] == local["totals"] and manifest["counts"] == local["counts"]
    data = ShardDataset.open(bucket_shards["meld"])
    assert data.split("train", ["sample_id"]).count() == manifest["totals"]["train"]
    assert data.bytes_on_disk("train") == sum(size for f, (size, _) in files.items() if f.startswith("split=train/"))
    # the freshness rule on a URI: a second run finds both datasets current
    again = preprocess(bucket_shards["cfg"])
    assert all(r.skipped for r in again), [(r.name, r.skipped) for r in again]
