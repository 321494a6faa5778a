"""dynsweep: sweep trainers on Ray, record training dynamics into MLflow, analyse them.

The code lives in three sibling packages (see DESIGN.md): ``orchestrator`` (spec, sweeps,
CLI, MLflow writing), ``trainers`` (the training loop and model families) and ``analysis``
(reading runs back and analysing trajectories). This package holds what all three share.
"""

from __future__ import annotations

__version__ = "0.1.0"
