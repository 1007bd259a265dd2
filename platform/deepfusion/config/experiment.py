"""One experiment file: every section a job may read."""

from __future__ import annotations

from deepfusion.config.base import ConfigError, StrictModel
from deepfusion.config.demo import DemoDataConfig
from deepfusion.config.faces import FaceEvalConfig
from deepfusion.config.fusion import FusionConfig
from deepfusion.config.pipeline import PipelineConfig
from deepfusion.config.predict import PredictSection
from deepfusion.config.preprocess import PreprocessConfig
from deepfusion.config.resources import RayConfig
from deepfusion.config.serving import ServeSection
from deepfusion.config.tracking import TrackingConfig
from deepfusion.config.train import TrainConfig


class ExperimentConfig(StrictModel):
    """One experiment file: each job reads its own section; all share ``ray``."""

    ray: RayConfig = RayConfig()
    # TensorBoard curves (on) and MLflow (opt-in) for train, tune_fusion and the pipeline
    tracking: TrackingConfig = TrackingConfig()
    demo_data: DemoDataConfig | None = None
    preprocess: PreprocessConfig | None = None
    train: TrainConfig | None = None
    fusion: FusionConfig | None = None
    serve: ServeSection | None = None
    pipeline: PipelineConfig | None = None
    predict: PredictSection | None = None  # jobs.predict / jobs.evaluate; None: the defaults
    faces: FaceEvalConfig | None = None  # jobs.evaluate_faces

    def require(self, section: str, source: str = "<config>"):
        value = getattr(self, section)
        if value is None:
            raise ConfigError(f"{source}: this job needs a {section!r} section")
        return value
