"""Typed experiment configuration, validated at the edge.

Experiments are YAML files in ``configs/``. ``load_config`` reads one, applies
``--set dotted.key=value`` overrides, expands ``${ENV_VARS}`` in strings and validates
the result against a pydantic model. Unknown keys and bad values are rejected with a
``ConfigError`` whose message names the file and the dotted key.
"""

from __future__ import annotations

from deepfusion.config.architectures import (
    AudioEncoderConfig,
    ImageBackboneConfig,
    MimamoConfig,
    ModelConfig,
    MultimodalLSTMConfig,
    SpeakerEncoderConfig,
    SpeechMLPConfig,
    TextEncoderConfig,
    TextileNetConfig,
)
from deepfusion.config.augment import AugmentConfig
from deepfusion.config.base import ConfigError, StrictModel
from deepfusion.config.demo import DemoDataConfig
from deepfusion.config.experiment import ExperimentConfig
from deepfusion.config.fusion import FusionConfig, FusionTraining, SearchSection, SearchSpace
from deepfusion.config.loading import apply_override, load_config, validate_config
from deepfusion.config.pipeline import PipelineConfig, ServeStage, StageFile
from deepfusion.config.predict import ModelActors, PredictSection
from deepfusion.config.preprocess import (
    AudioConfig,
    DatasetConfig,
    ImageFolderDataset,
    ManifestDataset,
    MediaLimits,
    MeldDataset,
    OpenSmileConfig,
    PreprocessConfig,
    SpeechDataset,
    SplitRatios,
    TextConfig,
    VideoConfig,
)
from deepfusion.config.resources import DataResources, RayConfig
from deepfusion.config.tracking import TrackingConfig
from deepfusion.config.train import OptimConfig, RunSection, ScalingSection, TrainConfig

__all__ = [
    "AudioConfig", "AudioEncoderConfig", "AugmentConfig", "ConfigError", "DataResources", "DatasetConfig",
    "DemoDataConfig", "ExperimentConfig", "FusionConfig", "FusionTraining", "ImageBackboneConfig",
    "ImageFolderDataset", "ManifestDataset", "MediaLimits", "MeldDataset", "MimamoConfig", "ModelActors",
    "ModelConfig", "MultimodalLSTMConfig", "OpenSmileConfig", "OptimConfig", "PredictSection",
    "PipelineConfig", "PreprocessConfig", "RayConfig", "RunSection", "ScalingSection", "SearchSection",
    "SearchSpace", "ServeStage", "SpeakerEncoderConfig", "SpeechDataset", "SpeechMLPConfig", "StageFile", "SplitRatios",
    "StrictModel", "TextConfig", "TextEncoderConfig", "TextileNetConfig", "TrackingConfig", "TrainConfig",
    "VideoConfig",
    "apply_override", "load_config", "validate_config",
]
