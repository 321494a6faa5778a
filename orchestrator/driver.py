"""The driver process around ``Tuner.fit``: Ctrl+C / SIGTERM, and Tune's own console output.

:func:`interruptible` turns the first Ctrl+C (or SIGTERM) into Tune's graceful stop and
remembers it in :data:`INTERRUPTED`; :func:`quiet_tune` keeps Tune's own reporter quiet, as
dynsweep draws its own table.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager

INTERRUPTED = threading.Event()


@contextmanager
def interruptible():
    """Ctrl+C / SIGTERM end the sweep gracefully and are remembered in ``INTERRUPTED``.

    Tune's own SIGINT handler does not tell its caller that it fired (the results of an
    interrupted sweep look finished), so ours records it and hands over to Tune's SIGUSR1
    handler, which saves the experiment state for ``resume``. A second Ctrl+C aborts.
    """
    INTERRUPTED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(sig, frame):
        INTERRUPTED.set()
        for s, h in previous.items():
            signal.signal(s, h)
        os.kill(os.getpid(), signal.SIGUSR1)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        with scoped_env(TUNE_DISABLE_SIGINT_HANDLER="1"):
            yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


@contextmanager
def scoped_env(**values: str):
    """Set environment variables for the duration of a block, then restore them."""
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def quiet_tune():
    """Tune prints nothing of its own during ``fit`` (dynsweep's SweepProgress shows the trials).

    ``RunConfig(verbose=0)`` alone is not enough: Tune's default console output
    (``ray.tune.experimental.output``) prints its "Configuration for experiment" box, "View
    detailed results here" and the TensorBoard hint whatever the verbosity; with
    ``RAY_AIR_NEW_OUTPUT=0`` Tune uses its former reporter, which at verbosity 0 prints nothing.
    ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1``: no TensorBoard event files (dynsweep passes
    Tune's CSV and JSON loggers itself). ``TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_
    THRESHOLD_S=0``: no warning that the experiment state is saved after every second checkpoint
    of a trial — ``CheckpointConfig(num_to_keep=2)`` asks for that, so that ``resume`` finds
    the checkpoints the state names (a save slower than 30 s is still reported). Tune's other
    log messages follow the ``ray`` logger's level (``--verbose``).
    """
    return scoped_env(
        RAY_AIR_NEW_OUTPUT="0",
        TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1",
        TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S="0",
    )


# --- test-only fault injection ----------------------------------------------------------------
KILL_ENV = "DYNSWEEP_TEST_KILL_DRIVER"
_KILL_EVENTS = ("trial_complete", "searcher_ask")
_seen: dict[str, int] = {}


def kill_point(event: str) -> None:
    """**Test-only.** ``DYNSWEEP_TEST_KILL_DRIVER=EVENT:N`` SIGKILLs this (driver) process at
    the ``N``-th ``EVENT``, so that a test hits a window between two saves on purpose:

    - ``trial_complete``: a trial has just completed and the searcher has been told (an Optuna
      study on a database holds it COMPLETE), Tune's experiment state not yet saved since;
    - ``searcher_ask``: the Optuna searcher has just asked its study for a new trial (RUNNING
      there), before Tune has created or saved that trial.

    Unset (as always outside the fault tests), this does nothing.
    """
    wanted = os.environ.get(KILL_ENV)
    if not wanted:
        return
    name, _, count = wanted.partition(":")
    if name not in _KILL_EVENTS or not count.isdigit() or int(count) < 1:
        raise ValueError(f"{KILL_ENV}: expected EVENT:N with EVENT one of {_KILL_EVENTS}, N ≥ 1")
    if name != event:
        return
    _seen[event] = _seen.get(event, 0) + 1
    if _seen[event] == int(count):
        os.kill(os.getpid(), signal.SIGKILL)
