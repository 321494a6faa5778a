"""Errors shared by every package.

A :class:`UserError` is bad input (config, data, checkpoint, CLI) that the user can fix: the
CLI prints its message alone, without a traceback, and exits with status 2.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix; the message names the field or file and what was expected."""


class ConfigError(UserError):
    """An experiment config (YAML or ``--set`` override) is invalid."""


class DataError(UserError):
    """A dataset, checkpoint or trajectory file is missing, unreadable or malformed."""


class TrialFailure(RuntimeError):
    """A trial failed for a reason that retrying cannot fix (e.g. a non-finite loss).

    The trial's MLflow run is marked FAILED with this message and retries stop at once.
    """
