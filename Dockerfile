# supervise on a PyTorch CUDA runtime image.
#
#   docker build -t registry.example.com/ml/train:v1 .
#
# Build your training image FROM this one (COPY your code into /workspace), or add your
# code below. The base image's Python already has torch: supervise never imports it, and
# installing it does not touch it. Pick a BASE_IMAGE whose CUDA the nodes' driver supports.
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

# Logs reach supervise's log pump (and the container log) line by line, not in 8 KiB blocks.
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/supervise
# The `s3` extra (s3fs) lets `--checkpoint-dir s3://...` work, as the launch/ examples use it;
# for gs:// install "./[gcs]" instead, or both: "./[s3,gcs]". Written "./" so that hadolint's
# DL3013 sees a local path rather than an unpinned package named ".".
COPY pyproject.toml README.md ./
COPY supervisor ./supervisor
RUN pip install --no-cache-dir "./[s3]" \
    && useradd --no-log-init --create-home --uid 10001 --user-group --shell /bin/sh trainer \
    && mkdir -p /workspace \
    && chown trainer:trainer /workspace

# Training never needs root; the GPU device nodes are made accessible by the device plugin.
USER 10001:10001
WORKDIR /workspace

# supervise is PID 1: it reaps orphans, forwards SIGTERM and maps each failure to an exit code.
ENTRYPOINT ["supervise", "--"]
CMD ["python", "train.py"]
