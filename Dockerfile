# One image for every node of a deepfusion cluster (cluster.yaml's docker block, and the
# KubeRay manifests in deploy/kuberay/): Ray's own image for Ray 2.60 on Python 3.11 with
# CUDA, the pinned torch built for CUDA, and this project with the extras the shipped
# cluster configs need (MLflow: configs/paper/pipeline.yaml records every run).
#
#   docker build -t REGISTRY/deepfusion:0.2.0 .
#   docker push REGISTRY/deepfusion:0.2.0
#
# tests/test_cluster_config.py checks that this install line and cluster.yaml's setup
# install the same extras, and that those are the ones the shipped configs require.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${RAY_IMAGE}

# PyTorch's CUDA wheels; pinned like pyproject.toml, installed first so that nothing below
# pulls another build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
RUN pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1 --index-url ${TORCH_INDEX_URL}

# The project, installed (not editable): jobs and the Serve app import it from site-packages
# on every node; configs/ and serve/ stay in the working folder, where relative paths in
# the configs resolve (`python -m jobs.pipeline --config configs/paper/pipeline.yaml`).
WORKDIR /home/ray/deepfusion
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users platform platform
COPY --chown=ray:users jobs jobs
RUN pip install --no-cache-dir ".[tracking]"
COPY --chown=ray:users configs configs
COPY --chown=ray:users serve serve

# Every Serve process reads this at start (deepfusion.ray_runtime); Ray's token
# authentication is switched on by the cluster (cluster.yaml, or KubeRay's authOptions).
ENV RAY_SERVE_THROUGHPUT_OPTIMIZED=1
