"""Serving: the plain predictors (``predictors``) and the Ray Serve application (``app``).

Importing this package puts Serve's throughput-optimized mode into the environment
(``deepfusion.ray_runtime.SERVE_ENVIRONMENT``) before anything here imports ``ray.serve``:
Serve reads it at import, and the handles a driver builds with ``build_app`` keep the
driver's settings (gRPC or object references between deployments).
"""

from deepfusion.ray_runtime import use_serve_environment

use_serve_environment()
