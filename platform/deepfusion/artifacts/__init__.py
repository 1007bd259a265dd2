"""Every on-disk format of the platform, and the one rule for "is this up to date".

    freshness    content keys of (resolved config, input hashes), their records, run
                 folders that resume or refuse, and the pipeline's stage ledger
    shards       the Parquet shard schemas, their byte codecs and the dataset manifest
    dataset      a preprocessed dataset as later stages read it (manifest, checks, splits)
    batches      shard rows -> model input tensors: the one conversion training, batch
                 prediction and Serve share
    checkpoint   backbone and fusion checkpoints: one card schema, saving and loading
    inference    a checkpoint's frozen model turning shard rows into logits
    bundle       a trained model as one self-contained folder (``deepfusion export``)

Nothing here trains or serves; training, fusion, evaluation and serving read and write
their files through this package. Content hashes come from ``deepfusion.hashing``.
"""
