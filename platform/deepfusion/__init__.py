"""deepfusion: an experimentation platform on Ray for multimodal deep-fusion models.

The Python API, for predictions in this process:

    from deepfusion import EmotionRecognizer, TextileClassifier

    recognizer = EmotionRecognizer.from_checkpoint("work/fusion/best")
    recognizer.predict(video="clip.mp4", text="Oh my God!", speaker="Rachel")
    TextileClassifier.from_checkpoint("work/runs/textile/best").predict("photo.jpg")

Both load torch on first use, not on ``import deepfusion``.

The library lives under ``platform/deepfusion`` (src layout). There is deliberately no
``platform/__init__.py``: ``platform`` is a standard-library module that Ray, torch and
pandas import, and a package of that name would shadow it.
"""

__version__ = "0.2.0"

__all__ = ["EmotionRecognizer", "TextileClassifier", "__version__"]


def __getattr__(name: str):
    if name == "EmotionRecognizer":
        from deepfusion.inference.emotion import EmotionRecognizer

        return EmotionRecognizer
    if name == "TextileClassifier":
        from deepfusion.inference.textile import TextileClassifier

        return TextileClassifier
    raise AttributeError(f"module 'deepfusion' has no attribute {name!r}")
