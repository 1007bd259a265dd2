"""Inference with trained checkpoints, as plain objects (no Ray): what the Python API,
batch prediction and the Serve app all run.

    emotion   requests -> shard rows (the ingestion decoder), both backbones and the fusion:
              ``EmotionRecognizer``; the answer's fields and their flat, tabular form
    textile   images -> the textile classifier's answer: ``TextileClassifier``

Decoding goes through the functions the Ray Data jobs use, with the preprocessing
settings recorded in the checkpoint's card, and tensors come from
``artifacts.batches``: train = batch prediction = serve.
"""
