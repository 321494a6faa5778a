# The dynsweep image: what clusters/ runs on every node.
#   CPU:  docker build -t dynsweep .
#   GPU:  docker build --build-arg BASE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime -t dynsweep:gpu .
# The GPU base brings a CUDA build of torch; pip keeps it (torchvision is installed to match).
ARG BASE=python:3.11-slim
FROM ${BASE}
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# git: runs record their commit; rsync/openssh: the Ray cluster launcher; mpich: MPI launch.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git rsync openssh-client build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/dynsweep
COPY pyproject.toml README.md ./
COPY dynsweep ./dynsweep
COPY orchestrator ./orchestrator
COPY trainers ./trainers
COPY analysis ./analysis
RUN pip install '.[deepspeed,mpi]' 'ray[default]' optuna-dashboard
COPY configs ./configs
COPY clusters ./clusters
WORKDIR /work
ENTRYPOINT ["dynsweep"]
CMD ["--help"]
