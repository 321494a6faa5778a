"""Orchestrator: experiment specs, sweeps on Ray Tune, the CLI, and MLflow tracking."""
