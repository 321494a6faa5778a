# The dynsweep image: what clusters/ runs on every node.
#   CPU:  docker build -t dynsweep .
#   GPU:  docker build --build-arg BASE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime -t dynsweep:gpu .
# BASE is any Debian-like image with Python >= 3.10 (its venv module) and apt; CI builds it on
# a Debian root filesystem made by mmdebstrap (.ci/image.sh). The versions come from
# constraints.txt (the ones CI tested); PyPI's Linux torch wheel is a CUDA build, so the GPU
# image runs on the GPU with the same pins.
ARG BASE=python:3.11-slim
FROM ${BASE}
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# git: runs record their commit; rsync/openssh: the Ray cluster launcher; build-essential:
# DeepSpeed's JIT ops.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git rsync openssh-client build-essential \
 && rm -rf /var/lib/apt/lists/*
# One virtual environment, first on PATH: the same on a python: image and on Debian's own
# Python (which refuses system-wide pip installs).
RUN python3 -m venv /opt/venv
WORKDIR /opt/dynsweep
# The whole project (.dockerignore leaves out local state), so no new package is forgotten.
COPY . .
# The extras the cluster docs use: PostgreSQL, S3 and GCS artifacts, DeepSpeed, MPI (CI adds
# `test`, to run the tests in the image). pip's cache is a build cache, not in the image.
ARG EXTRAS=postgres,s3,gcs,deepspeed,mpi
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -c constraints.txt ".[${EXTRAS}]" optuna-dashboard
WORKDIR /work
# No ENTRYPOINT: Ray's cluster launcher starts containers as `docker run … IMAGE bash`.
CMD ["dynsweep", "--help"]
