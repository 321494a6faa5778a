"""Live progress of a sweep and of long loops, readable in a terminal and quiet in CI logs.

In a terminal, :class:`SweepProgress` redraws a table every few seconds: each trial's status,
step and latest value of the sweep's metric, with the sweep's done/running/pending counts and
an ETA from the steps done so far. Not in a terminal (a CI log, a file), it prints one line
per finished trial instead. (:class:`dynsweep.progress.Bar` is the same idea for counted work,
without Ray.)
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from ray import tune

from dynsweep.progress import eta, interactive

REDRAW_S = 5.0
MAX_ROWS = 20  # running trials first, then the most recent others


@dataclass
class _Trial:
    name: str
    status: str = "PENDING"
    step: int = 0
    value: float | None = None


class SweepProgress(tune.Callback):
    """A Tune callback that shows the sweep's trials (see the module doc)."""

    def __init__(self, metric: str, total_trials: int, steps_per_trial: int, live=None) -> None:
        self.metric, self.total_trials, self.steps_per_trial = metric, total_trials, steps_per_trial
        self.live = interactive() if live is None else live
        self.setup()

    def setup(self, *args, **kwargs) -> None:
        """(Tune calls this when the experiment starts, a resumed one included.)"""
        self.trials: dict[str, _Trial] = {}
        self.started, self.shown = time.monotonic(), 0.0

    def _trial(self, trial) -> _Trial:
        return self.trials.setdefault(trial.trial_id, _Trial(str(trial)))

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._trial(trial).status = "RUNNING"

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        row = self._trial(trial)
        row.status, row.step = "RUNNING", int(result.get("step", row.step))
        if self.metric in result:
            row.value = result[self.metric]
        self._maybe_draw()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._end(trial, "FAILED")

    def _end(self, trial, status: str) -> None:
        row = self._trial(trial)
        row.status = status
        if status == "FINISHED":
            row.step = max(row.step, self.steps_per_trial)
        if not self.live:
            ended = sum(t.status in ("FINISHED", "FAILED") for t in self.trials.values())
            value = "" if row.value is None else f"  {self.metric} = {row.value:.4g}"
            print(f"[{ended}/{self.total_trials}] {row.name} {status}{value}", flush=True)
        self._maybe_draw(force=True)

    def counts(self) -> dict[str, int]:
        out = {"FINISHED": 0, "FAILED": 0, "RUNNING": 0}
        for t in self.trials.values():
            out[t.status] = out.get(t.status, 0) + 1
        out["PENDING"] = self.total_trials - sum(out.values()) + out.get("PENDING", 0)
        return out

    def render(self) -> str:
        """The table as text (also what a test reads)."""
        elapsed = time.monotonic() - self.started
        done = sum(min(t.step, self.steps_per_trial) for t in self.trials.values())
        total = self.total_trials * self.steps_per_trial
        c = self.counts()
        lines = [
            f"dynsweep: {c['FINISHED']} finished, {c['FAILED']} failed, {c['RUNNING']} running, "
            f"{c['PENDING']} pending of {self.total_trials}  |  steps {done}/{total}  |  "
            f"elapsed {time.strftime('%H:%M:%S', time.gmtime(elapsed))}  "
            f"ETA {eta(done, total, elapsed)}",
            f"  {'trial':<36} {'status':<9} {'step':>7}  {self.metric}",
        ]
        order = sorted(self.trials.values(), key=lambda t: (t.status != "RUNNING", t.name))
        for t in order[:MAX_ROWS]:
            value = "" if t.value is None else f"{t.value:.4g}"
            lines.append(f"  {t.name[:36]:<36} {t.status:<9} {t.step:>7}  {value}")
        return "\n".join(lines)

    def _maybe_draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.live or (not force and now - self.shown < REDRAW_S):
            return
        self.shown = now
        print(self.render(), file=sys.stderr, flush=True)


class PendingWatch(tune.Callback):
    """Says once, plainly, when no trial can be placed, and ends the sweep after ``timeout_s``.

    "Cannot be placed": trials wait, none runs, and no live node has the resources one trial
    needs (a trial that waits for a busy node, or for its process to start, is not reported).
    On a cluster that autoscales, nodes may still come; so the sweep waits, but says what it
    waits for (once, not Ray's stream of autoscaler lines) and gives up after ``timeout_s``
    (``resources.schedule_timeout_s``; ``None``: wait forever). :attr:`stopper` is the Tune
    stopper that ends the experiment then; :attr:`expired` holds the reason.
    """

    def __init__(self, need: dict[str, float], timeout_s: float | None, notice_s: float = 15.0):
        self.need, self.timeout_s = need, timeout_s
        self.notice_s = min(notice_s, timeout_s) if timeout_s else notice_s
        self.since: float | None = None
        self.checked = 0.0
        self.have: dict[str, float] = {}
        self.noticed = False
        self.expired: str | None = None
        watch = self

        class _Stop(tune.stopper.Stopper):
            def __call__(self, trial_id, result) -> bool:
                return False

            def stop_all(self) -> bool:
                return watch.expired is not None

        self.stopper = _Stop()

    def on_step_begin(self, iteration, trials, **info) -> None:
        waiting = [t for t in trials if t.status == "PENDING"]
        if not waiting or any(t.status == "RUNNING" for t in trials):
            self.since = None
            return
        now = time.monotonic()
        if self.since is not None and now - self.checked < 1.0:
            waited = now - self.since
        else:  # (asking Ray about its nodes once a second is enough)
            self.checked = now
            nodes = _nodes()
            if any(_fits(self.need, node) for node in nodes):
                self.since = None  # a node could hold a trial: it is starting, or busy elsewhere
                return
            self.since = self.since if self.since is not None else now
            waited = now - self.since
            self.have = _largest(nodes)
        if waited >= self.notice_s and not self.noticed:
            self.noticed = True
            limit = f"up to {self.timeout_s:g} s" if self.timeout_s else "without a limit"
            print(
                f"dynsweep: no trial can be placed: each needs {_fmt(self.need)}, the largest "
                f"node has {_fmt(self.have)}; waiting {limit} for nodes "
                f"(resources.schedule_timeout_s)",
                file=sys.stderr,
                flush=True,
            )
        if self.timeout_s is not None and waited >= self.timeout_s and self.expired is None:
            names = ", ".join(str(t) for t in waiting[:5]) + (" …" if len(waiting) > 5 else "")
            self.expired = (
                f"not scheduled within {self.timeout_s:g} s: {len(waiting)} trials ({names}) "
                f"each need {_fmt(self.need)}; the largest node has {_fmt(self.have)}"
            )


def _nodes() -> list[dict[str, float]]:
    """The resources of each live node of the cluster."""
    import ray

    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def _fits(need: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(k, 0.0) >= v for k, v in need.items() if v > 0)


def _largest(nodes: list[dict[str, float]]) -> dict[str, float]:
    best = max(nodes, key=lambda n: (n.get("GPU", 0.0), n.get("CPU", 0.0)), default={})
    return {k: best.get(k, 0.0) for k in ("CPU", "GPU")}


def _fmt(resources: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in resources.items())
