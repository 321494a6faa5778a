"""Chained studies: values drawn from the finished runs of another experiment.

Anywhere in a trainer config, ``{runs: {...}}`` stands for artifacts of an earlier sweep::

    path_model:            # one trial per path of the newest paths sweep (a grid dimension)
      runs: {experiment: subspace_paths_toy, artifact: model/model.pt}
    endpoints:             # a plain list of the two best networks (one value, not a dimension)
      runs: {experiment: paths_digits_endpoints, best: 2, metric: val/best_loss, form: list}

Fields: ``experiment`` (required); ``artifact`` (default ``model/model.pt``); ``sweep`` (a sweep
run id or name; default the newest); ``where`` (params that must match, e.g.
``{config.activation: relu}``); ``best`` N by ``metric`` (its last value) and ``mode``;
``form``: ``grid`` (default: a search dimension over the runs) or ``list`` (one value);
``count``: the number of runs expected (an error when the sweep has fewer).

Only FINISHED runs count. The query is checked when the spec is loaded (it validates against
the trainer's config with a placeholder reference) and answered when the sweep starts, just
before Ray: it becomes ``{grid: [run:ID/ARTIFACT, …]}`` or ``[run:ID/ARTIFACT, …]``, which
:mod:`orchestrator.references` then turns into local files. ``dynsweep sweep A.yaml B.yaml``
runs stages in order, so a query in B sees the sweep A has just finished.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dynsweep.errors import ConfigError, UserError

KEY = "runs"


class RunsQuery(BaseModel):
    """Which runs of which experiment, and how they enter the config."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    experiment: str = Field(min_length=1)
    artifact: str = Field("model/model.pt", min_length=1)
    sweep: str | None = None
    where: dict[str, Any] = {}
    best: int | None = Field(None, ge=1)
    metric: str | None = None
    mode: Literal["min", "max"] = "min"
    form: Literal["grid", "list"] = "grid"
    count: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _metric_with_best(self) -> RunsQuery:
        if self.best is not None and self.metric is None:
            raise ValueError("best needs a metric to rank the runs by")
        return self

    def placeholder(self) -> Any:
        """A stand-in value of the right shape, to validate the trainer's config before the
        query is answered."""
        ref = f"run:{self.experiment}/{self.artifact}"
        if self.form == "grid":
            return ref
        return [ref] * (self.count or self.best or 1)

    def describe(self) -> str:
        parts = [f"the finished runs of {self.experiment!r}"]
        parts.append(f"sweep {self.sweep!r}" if self.sweep else "(newest sweep)")
        if self.where:
            parts.append("where " + ", ".join(f"{k} = {v!r}" for k, v in self.where.items()))
        if self.best:
            parts.append(f"best {self.best} by {self.metric} ({self.mode})")
        return " ".join(parts) + f" → {self.artifact}"


def parse(args: Any, where: str) -> RunsQuery:
    if not isinstance(args, dict):
        raise ConfigError(f"{where}: expected a mapping with experiment (and artifact, best, …)")
    try:
        return RunsQuery.model_validate(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        at = f"{where}.{field}" if field else where
        raise ConfigError(f"{at}: {first['msg']}") from None


def queries(config: Any, path: tuple = ()) -> list[tuple[tuple, RunsQuery]]:
    """Every ``{runs: …}`` in a plain config, with its path."""
    if isinstance(config, dict):
        if len(config) == 1 and KEY in config:
            return [(path, parse(config[KEY], ".".join(map(str, (*path, KEY)))))]
        return [q for k, v in config.items() for q in queries(v, (*path, k))]
    if isinstance(config, list):
        return [q for i, v in enumerate(config) for q in queries(v, (*path, i))]
    return []


def answer(query: RunsQuery, uri: str, where: str) -> Any:
    """The query's value: ``{grid: [run:ID/ARTIFACT, …]}`` or ``[run:ID/ARTIFACT, …]``."""
    from analysis.io import find_runs

    try:
        runs = find_runs(query.experiment, sweep=query.sweep, status="FINISHED", uri=uri)
    except UserError as exc:
        raise ConfigError(f"{where}: {exc}{_hint(query)}") from None
    runs = [r for r in runs if _matches(r.data.params, query.where)]
    if query.metric is not None:
        scored = [r for r in runs if query.metric in r.data.metrics]
        scored.sort(
            key=lambda r: r.data.metrics[query.metric], reverse=query.mode == "max"
        )  # stable: ties keep the run-name order
        runs = scored[: query.best] if query.best else scored
    if not runs:
        raise ConfigError(f"{where}: no runs match: {query.describe()}{_hint(query)}")
    if query.count is not None and len(runs) != query.count:
        raise ConfigError(
            f"{where}: expected {query.count} runs, found {len(runs)}: {query.describe()}"
        )
    refs = [f"run:{r.info.run_id}/{query.artifact}" for r in runs]
    return {"grid": refs} if query.form == "grid" else refs


def resolve(config: dict[str, Any], uri: str) -> dict[str, Any]:
    """``config`` with every runs query answered (a copy; the input is not changed)."""
    out = json.loads(json.dumps(config))
    for path, query in queries(config):
        where = ".".join(map(str, ("config", *path, KEY)))
        value = answer(query, uri, where)
        parent = out
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
    return out


def stage_overrides(overrides: list[str], stage: int, stages: int) -> list[str]:
    """The ``--set`` items for stage ``stage`` of ``dynsweep sweep A.yaml B.yaml …``: plain
    ``KEY=VALUE`` apply to every stage, ``N:KEY=VALUE`` to stage N only."""
    out = []
    for item in overrides:
        head, sep, rest = item.partition(":")
        if sep and head.isdigit() and "=" not in head:
            if not 1 <= int(head) <= stages:
                raise UserError(f"--set {item}: stage {head} does not exist (1…{stages})")
            if int(head) == stage:
                out.append(rest)
        else:
            out.append(item)
    return out


def _matches(params: dict[str, str], where: dict[str, Any]) -> bool:
    for key, want in where.items():
        text = want if isinstance(want, str) else json.dumps(want)
        if params.get(key) != text:
            return False
    return True


def _hint(query: RunsQuery) -> str:
    return (
        f" (run that experiment first, or both in order: "
        f"dynsweep sweep <{query.experiment} config> <this config>)"
    )
