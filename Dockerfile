# dynsweep image (a first version; clusters and GPU variants arrive with the cluster work).
# CPU:  docker build -t dynsweep .
# GPU:  docker build --build-arg BASE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime -t dynsweep:gpu .
ARG BASE=python:3.11-slim
FROM ${BASE}
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/dynsweep
COPY pyproject.toml README.md ./
COPY dynsweep ./dynsweep
COPY orchestrator ./orchestrator
COPY trainers ./trainers
COPY analysis ./analysis
RUN pip install .
COPY configs ./configs
WORKDIR /work
ENTRYPOINT ["dynsweep"]
CMD ["--help"]
