"""The search-space DSL of experiment YAMLs.

Anywhere in a trainer config (at any depth), a mapping with exactly one of these keys is a
search dimension instead of a value::

    {grid: [a, b, c]}        every value, crossed with the other grids (Tune grid_search)
    {choice: [a, b, c]}      one value drawn per sample
    {uniform: [lo, hi]}      a float in [lo, hi]
    {loguniform: [lo, hi]}   a float in [lo, hi], uniform in log space (0 < lo)
    {randint: [lo, hi]}      an integer in [lo, hi) (upper bound excluded, as in Tune)

``parse`` turns those mappings into :class:`Domain` objects; ``to_tune`` builds the Tune
param space; ``corners`` lists representative values so every branch of a space can be
validated against the trainer's typed config before anything starts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dynsweep.errors import ConfigError
from orchestrator import chain

KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
Path = tuple[str | int, ...]


def dotted(path: Path) -> str:
    return ".".join(str(p) for p in path)


@dataclass(frozen=True)
class Domain:
    kind: str
    values: tuple[Any, ...]

    def to_tune(self) -> Any:
        from ray import tune

        if self.kind == "grid":
            return tune.grid_search(list(self.values))
        if self.kind == "choice":
            return tune.choice(list(self.values))
        lo, hi = self.values
        return {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}[
            self.kind
        ](lo, hi)

    def corners(self) -> list[Any]:
        """Values that exercise every branch: all listed values, or both ends of a range."""
        if self.kind in ("grid", "choice"):
            return list(self.values)
        lo, hi = self.values
        return [lo, hi - 1] if self.kind == "randint" else [lo, hi]

    def to_plain(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.values)}


def _parse_domain(kind: str, args: Any, path: Path) -> Domain:
    where = f"{dotted(path)}.{kind}"
    if not isinstance(args, list | tuple):
        raise ConfigError(f"{where}: expected a list, got {type(args).__name__} {args!r}")
    if kind in ("grid", "choice"):
        if not args:
            raise ConfigError(f"{where}: expected a non-empty list of values")
        return Domain(kind, tuple(args))
    if len(args) != 2 or not all(
        isinstance(a, int | float) and not isinstance(a, bool) for a in args
    ):
        raise ConfigError(f"{where}: expected [low, high] (two numbers), got {args!r}")
    lo, hi = args
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ConfigError(f"{where}: expected finite low < high, got {args!r}")
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(f"{where}: expected 0 < low for a log-uniform range, got {args!r}")
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise ConfigError(f"{where}: expected two integers, got {args!r}")
    return Domain(kind, (lo, hi))


def parse(obj: Any, path: Path = ()) -> Any:
    """Return ``obj`` with every DSL mapping replaced by a :class:`Domain`."""
    if isinstance(obj, dict):
        if len(obj) == 1:
            ((key, value),) = obj.items()
            if key in KINDS:
                return _parse_domain(key, value, path)
            if key == chain.KEY:
                return chain.parse(value, f"{dotted(path)}.{key}")
        return {k: parse(v, (*path, k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [parse(v, (*path, i)) for i, v in enumerate(obj)]
    return obj


def domains(obj: Any, path: Path = ()) -> Iterator[tuple[Path, Domain]]:
    """Every (path, domain) in a parsed space, depth first."""
    if isinstance(obj, Domain):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from domains(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from domains(v, (*path, i))


def substitute(obj: Any, chosen: dict[Path, Any] | None = None, path: Path = ()) -> Any:
    """A plain value: each domain replaced by ``chosen[path]`` or else its first corner."""
    chosen = chosen or {}
    if isinstance(obj, Domain):
        return chosen.get(path, obj.corners()[0])
    if isinstance(obj, chain.RunsQuery):
        return obj.placeholder()
    if isinstance(obj, dict):
        return {k: substitute(v, chosen, (*path, k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [substitute(v, chosen, (*path, i)) for i, v in enumerate(obj)]
    return obj


def variants(obj: Any) -> Iterator[tuple[dict[Path, Any], Any]]:
    """Plain values covering every corner: (the corners chosen, the substituted value).

    The first has every domain at its first corner; each further one moves one domain to
    another corner, so a bad value is reported together with the dimension that produced it.
    """
    yield {}, substitute(obj)
    for path, dom in domains(obj):
        for value in dom.corners()[1:]:
            yield {path: value}, substitute(obj, {path: value})


def to_tune(obj: Any) -> Any:
    """The Tune param space (nested dicts with Tune domains)."""
    if isinstance(obj, Domain):
        return obj.to_tune()
    if isinstance(obj, chain.RunsQuery):
        raise ConfigError(f"a runs query was not answered before Ray: {obj.describe()}")
    if isinstance(obj, dict):
        return {k: to_tune(v) for k, v in obj.items()}
    if isinstance(obj, list):
        if any(True for _ in domains(obj)):
            raise ConfigError("search dimensions inside lists are not supported; use a mapping")
        return list(obj)
    return obj


def to_plain(obj: Any) -> Any:
    """The DSL form again (for printing and saving the resolved spec)."""
    if isinstance(obj, Domain):
        return obj.to_plain()
    if isinstance(obj, chain.RunsQuery):
        return {chain.KEY: obj.model_dump(exclude_defaults=True)}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    return obj


def grid_size(obj: Any) -> int:
    """Number of grid points (product of the sizes of all ``grid`` dimensions)."""
    return math.prod(len(d.values) for _, d in domains(obj) if d.kind == "grid")
