"""Evaluating a trained model: metrics from a confusion matrix (``metrics``), a checkpoint's
predictions over a split with Ray Data (``predict``), and the metrics JSON and confusion
PNG on disk (``report``). Used by training, fusion and the workflows alike."""
