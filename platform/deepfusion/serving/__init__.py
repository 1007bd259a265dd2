"""Serving: the Ray Serve application (``app``) over ``deepfusion.inference``.

Importing this package changes nothing. Serve's throughput-optimized mode must be in the
environment before ``ray.serve`` is imported (Serve reads it at import, and the handles
a driver builds with ``build_app`` keep the driver's transport): call
``deepfusion.ray_runtime.use_serve_environment()`` first, as ``connect``, ``make serve``,
``serve/config.yaml``'s ``app_builder`` and the pipeline's serve stage do.
"""
