"""Preprocessing with Ray Data: dataset layouts on disk -> Parquet shards + manifest + quarantine.

``deepfusion.preprocess.datasets.preprocess`` is the entry point. This package init imports
nothing on purpose: every Ray Data worker imports the decoder modules, and must not pay
for the image path's torch/torchvision when it only decodes audio and video.
"""
