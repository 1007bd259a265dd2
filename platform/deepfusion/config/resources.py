"""How jobs reach Ray and how big their workers are."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deepfusion.config.base import StrictModel


class RayConfig(StrictModel):
    """How a job reaches Ray: join ``address`` (or ``RAY_ADDRESS``), else start a local node."""

    address: str | None = None
    # Only used when this process starts a local node; None lets Ray count the cores.
    num_cpus: int | None = None
    num_gpus: int | None = None
    # When joining a running cluster, send this process's deepfusion package to every
    # worker (Ray's runtime_env ``py_modules``), so each node runs the driver's code, not
    # whatever copy (or none) its own disk holds. Off: the nodes' installed copy runs.
    ship_library: bool = True


class DataResources(StrictModel):
    """Sizing of Ray Data workers. Fractional CPUs keep 2-core machines schedulable."""

    num_cpus: float = Field(0.5, gt=0)
    # GPUs per actor where the workers run a model (the fusion stage's logit pass): 0.5
    # puts two on one card. Decoders ignore it.
    num_gpus: float = Field(0.0, ge=0)
    # Decoder actors (or tasks) running at once.
    concurrency: int = Field(2, ge=1)
    batch_size: int = Field(8, ge=1)
    # Parquet files hold at least this many rows (the last one of a split may hold fewer).
    rows_per_shard: int = Field(256, ge=1)
    # Where the decoders of local media files run. "driver_node": on the node of the job's
    # driver, which reads the corpus's folders (a cluster's other nodes may not have them);
    # "any_node": anywhere, for a corpus every node mounts at the same path.
    decode_on: Literal["driver_node", "any_node"] = "driver_node"
