"""deepfusion: an experimentation platform on Ray for multimodal deep-fusion models.

The library lives under ``platform/deepfusion`` (src layout). There is deliberately no
``platform/__init__.py``: ``platform`` is a standard-library module that Ray, torch and
pandas import, and a package of that name would shadow it.
"""

__version__ = "0.1.0"
