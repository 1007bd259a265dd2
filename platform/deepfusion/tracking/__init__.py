"""Where a run can be watched: TensorBoard curves and MLflow records.

    tensorboard  per-epoch scalars of a Ray Train run (written by the rank-0 worker)
    mlflow_runs  one MLflow run per backbone run, one per fusion trial (Ray's MLflow callback)
"""
