"""dynsweep: sweep trainers on Ray, record training dynamics into MLflow, analyse them.

The code lives in sibling packages, in layers (docs/architecture.md): ``trainers`` (the
training loop and model families) and ``tracking`` (MLflow, read and write) below
``analysis`` (analysis steps and their runner), and ``orchestrator`` (spec, sweeps, CLI) on
top. This package holds what all of them share.
"""

from __future__ import annotations

__version__ = "0.1.0"
