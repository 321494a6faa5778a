"""The ExperimentSpec: one YAML file → a validated, typed, frozen description of a sweep.

Everything is checked here, before Ray starts: the section fields, registry names (trainer,
searcher, scheduler, analysis steps), the search-space DSL, and the trainer's own typed config
at every corner of the space (every grid/choice value, both ends of every range).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from analysis.registry import ANALYSIS_STEPS
from dynsweep.errors import ConfigError
from dynsweep.uri import DEFAULT_URI
from orchestrator import budget, space
from orchestrator.registry import SCHEDULERS, SEARCHERS
from trainers import TRAINERS, get_trainer_class
from trainers.loop import LoopConfig, StopRule

# Where a sweep's state and checkpoints can live (pyarrow's filesystems; see orchestrator.storage)
STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def _registered(registry: dict[str, Any], what: str):
    def check(value: str) -> str:
        if value not in registry:
            raise ValueError(
                f"unknown {what} {value!r}; expected one of: {', '.join(sorted(registry))}"
            )
        return value

    return check


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SearchSpec(_Section):
    """How trials are chosen. ``objectives`` (optuna only) makes the search multi-objective."""

    algorithm: str = "grid"
    seed: int | None = None
    objectives: dict[str, Literal["max", "min"]] | None = None
    # optuna: where the study lives, so that it outlives the sweep (a later or resumed sweep
    # with the same study continues it): an RDB URI (sqlite:///optuna.db, postgresql://...)
    # or journal:PATH (Optuna's journal file, for NFS). study_name defaults to the experiment.
    storage: str | None = None
    study_name: str | None = None

    @model_validator(mode="after")
    def _storage_for_optuna(self) -> SearchSpec:
        if (self.storage or self.study_name) and self.algorithm != "optuna":
            raise ValueError("storage and study_name need algorithm: optuna")
        if self.storage and not re.match(r"^(journal:.+|[a-z0-9+]+://.*)$", self.storage):
            raise ValueError("storage: expected an RDB URI (sqlite:///optuna.db) or journal:PATH")
        return self

    _algo = field_validator("algorithm")(_registered(SEARCHERS, "search algorithm"))


class SchedulerSpec(_Section):
    """Early stopping / population schedule; intervals are in training steps."""

    name: str = "fifo"
    grace_period: int = Field(20, ge=1)
    reduction_factor: float = Field(3.0, gt=1)
    perturbation_interval: int = Field(50, ge=1)

    _name = field_validator("name")(_registered(SCHEDULERS, "scheduler"))


class ResourcesSpec(_Section):
    """Per trial: ``cpus``/``gpus`` of one process; or ``workers`` Ray Train workers (each
    ``cpus_per_worker``/``gpus_per_worker``) trained with DDP or DeepSpeed (``strategy``).
    ``analysis_gpus``: GPUs per analysis task of a step that runs a model (fid, elbo)."""

    cpus: float = Field(1.0, gt=0)
    gpus: float = Field(0.0, ge=0)
    workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    strategy: Literal["ddp", "deepspeed"] = "ddp"
    zero_stage: int = Field(0, ge=0, le=3)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    analysis_gpus: float = Field(0.0, ge=0)
    # On a cluster: give up (the sweep fails, saying why) when no trial could be placed for
    # this long; null waits forever. A local Ray refuses what it lacks before it starts.
    schedule_timeout_s: float | None = Field(900.0, gt=0)
    # pack: auto on GPUs caps a pack's members by this (default: this machine's GPU, if any)
    gpu_memory_gb: float | None = Field(None, gt=0)

    @property
    def distributed(self) -> bool:
        """Trained by a Ray Train ``TorchTrainer`` started from the trial."""
        return self.workers > 1 or self.strategy == "deepspeed"

    @model_validator(mode="after")
    def _deepspeed_only(self) -> ResourcesSpec:
        if self.strategy != "deepspeed":
            for name, default in (("zero_stage", 0), ("precision", "fp32")):
                if getattr(self, name) != default:
                    raise ValueError(f"{name}: needs strategy: deepspeed")
        return self


class TrackingSpec(_Section):
    uri: str = DEFAULT_URI
    experiment: str | None = None


class AnalysisStepSpec(_Section):
    """One analysis step run on every finished trial. ``input``: a metric key, a list of them
    (aligned on common steps; ``ccm``), or a trajectory name (``weight_pca``, ``pdefind``);
    steps that read the run's final model (``fid``, ``elbo``, ``koopman_spectrum``) ignore it.
    ``name`` (default: the step) prefixes the results, ``analysis/<name>/...``."""

    step: str
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    input: str | list[str] = "train/loss"
    params: dict[str, Any] = {}

    _step = field_validator("step")(_registered(ANALYSIS_STEPS, "analysis step"))

    @model_validator(mode="after")
    def _fits_the_step(self) -> AnalysisStepSpec:
        import inspect

        from analysis.registry import get_analysis_step

        cls = get_analysis_step(self.step)
        count = 1 if isinstance(self.input, str) else len(self.input)
        if count < getattr(cls, "min_inputs", 1):
            raise ValueError(f"input: step {self.step} needs {cls.min_inputs} or more series")
        try:
            inspect.signature(cls).bind(**self.params)
        except TypeError as exc:
            names = [p for p in inspect.signature(cls).parameters if p != "self"]
            raise ValueError(f"params: {exc}; {self.step} takes: {', '.join(names)}") from None
        return self


class ExperimentSpec(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    trainer: str
    config: dict[str, Any] = {}
    seed: Any = 0
    metric: str = "val/loss"
    mode: Literal["max", "min"] = "min"
    search: SearchSpec = SearchSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    num_samples: int = Field(1, ge=1, le=100_000)
    max_concurrent_trials: int | None = Field(None, ge=1)
    # Grid points per Tune trial, trained as one vectorised model (trainers.packing); "auto":
    # two packs per CPU slot (the scheduler evens out packs of unequal cost), one per GPU
    # (orchestrator.packing.make_packs).
    pack: Annotated[int, Field(ge=1)] | Literal["auto"] = 1
    resources: ResourcesSpec = ResourcesSpec()
    stop: StopRule = StopRule()
    loop: LoopConfig = LoopConfig()
    max_failures: int = Field(2, ge=0)
    tracking: TrackingSpec = TrackingSpec()
    storage: str = "dynsweep_runs"
    data_dir: str = "data"
    analysis: tuple[AnalysisStepSpec, ...] = ()

    _trainer = field_validator("trainer")(_registered(TRAINERS, "trainer"))

    @field_validator("storage")
    @classmethod
    def _storage_location(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme and scheme not in STORAGE_SCHEMES:
            raise ValueError(
                f"expected a folder or a URI of {', '.join(s + '://' for s in STORAGE_SCHEMES)}"
                f"; got {scheme}://"
            )
        return value

    # --- derived -------------------------------------------------------------------------
    def parsed_space(self) -> dict[str, Any]:
        """The param space of one trial (``config`` and ``seed``), with Domain objects."""
        return {
            "config": space.parse(self.config, ("config",)),
            "seed": space.parse(self.seed, ("seed",)),
        }

    def num_trials(self) -> int:
        if self.search.algorithm == "optuna":
            return self.num_samples
        return space.grid_size(self.parsed_space()) * self.num_samples

    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    def resolved(self) -> dict[str, Any]:
        """The spec as plain data, with every default filled in (saved with every run)."""
        return self.model_dump(mode="json")

    def config_hash(self) -> str:
        blob = json.dumps(self.resolved(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


# --- loading ------------------------------------------------------------------------------


def _model_at(model: type[BaseModel] | None, loc: tuple) -> type[BaseModel] | None:
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return model


def format_validation(exc: ValidationError, prefix: str, model: type[BaseModel]) -> str:
    """One line per error: the dotted field path, what was wrong, and what was expected."""
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        path = ".".join(str(p) for p in (prefix, *loc) if p != "")
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            valid = f"; valid fields: {', '.join(parent.model_fields)}" if parent else ""
            lines.append(f"{path}: unknown field{valid}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            shown = "" if isinstance(got, dict) or err["type"] == "missing" else f" (got {got!r})"
            lines.append(f"{path}: {msg}{shown}")
    return "\n".join(lines)


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = raw
    for key in keys[:-1]:
        nxt = node.get(key)
        if nxt is None:
            nxt = node[key] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: {key!r} is not a mapping (it is {nxt!r})")
        node = nxt
    node[keys[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``path.to.key=value`` overrides; values are parsed as YAML (``0.1``, ``[1,2]``)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_/-]+(\.[A-Za-z0-9_/-]+)*", key):
            raise ConfigError(f"--set {item!r}: expected path.to.key=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from exc
        _set(raw, key, value)
    return raw


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of experiment fields at the top level")
    return raw


def validate_trainer_config(spec: ExperimentSpec) -> None:
    """Validate the trainer's typed config at every corner of the search space."""
    cls = get_trainer_class(spec.trainer)
    parsed = spec.parsed_space()
    for chosen, value in space.variants(parsed["config"]):
        try:
            cls.Config.model_validate(value)
        except ValidationError as exc:
            at = "".join(f" (when config.{space.dotted(p)} = {v!r})" for p, v in chosen.items())
            raise ConfigError(format_validation(exc, "config", cls.Config) + at) from None
    for _, dom in space.domains(parsed["seed"]):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in dom.corners()):
            raise ConfigError("seed: expected integers")
    if not isinstance(parsed["seed"], space.Domain | int) or isinstance(parsed["seed"], bool):
        raise ConfigError(f"seed: expected an integer or a search dimension, got {spec.seed!r}")
    bad = [r.probe for r in spec.loop.record if r.probe not in cls.probes]
    if bad:
        raise ConfigError(
            f"loop.record: trainer {spec.trainer!r} has no probe {bad[0]!r}; "
            f"expected one of: {', '.join(cls.probes)}"
        )
    if spec.resources.distributed and not getattr(cls, "distributed", False):
        raise ConfigError(
            f"resources: trainer {spec.trainer!r} trains in one process; "
            f"use workers: 1 and strategy: ddp (distributed trainers: diffusion)"
        )


def check_consistency(spec: ExperimentSpec) -> None:
    """Cross-field rules that a single field cannot express."""
    parsed = spec.parsed_space()
    algo = spec.search.algorithm
    if algo == "optuna" and any(d.kind == "grid" for _, d in space.domains(parsed)):
        raise ConfigError(
            "config: 'grid' dimensions need search.algorithm grid or random; "
            "with optuna use 'choice'"
        )
    if spec.search.objectives and algo != "optuna":
        raise ConfigError("search.objectives: multi-objective search needs search.algorithm optuna")
    if spec.search.objectives and spec.scheduler.name != "fifo":
        raise ConfigError("scheduler.name: multi-objective search works only with scheduler fifo")
    if spec.scheduler.name == "pbt" and not any(
        d.kind != "grid" for _, d in space.domains(parsed["config"])
    ):
        raise ConfigError(
            "scheduler.name: pbt needs choice/uniform/loguniform/randint dimensions "
            "in config to mutate"
        )
    if spec.pack != 1:
        _check_packing(spec)
    if spec.num_trials() > 100_000:
        raise ConfigError(f"config: the space has {spec.num_trials()} trials; the limit is 100000")
    budget.check(spec)


def _check_packing(spec: ExperimentSpec) -> None:
    cls = get_trainer_class(spec.trainer)
    if not cls.packed:
        able = sorted(n for n in TRAINERS if get_trainer_class(n).packed)
        raise ConfigError(
            f"pack: trainer {spec.trainer!r} cannot pack grid points; "
            f"use pack: 1 (trainers that can: {', '.join(able)})"
        )
    rules = [
        (spec.search.algorithm != "grid", "search.algorithm grid"),
        (spec.scheduler.name != "fifo", "scheduler.name fifo (members stop together)"),
        (spec.stop.metric is not None, "no stop.metric (members stop together)"),
        (spec.resources.distributed, "one process per trial (resources.workers 1)"),
    ]
    for broken, needed in rules:
        if broken:
            raise ConfigError(f"pack: packing needs {needed}")
    for path, dom in space.domains(spec.parsed_space()):
        if dom.kind != "grid":
            raise ConfigError(
                f"pack: packing needs grid dimensions only; {space.dotted(path)} is {dom.kind}"
            )


def load_spec(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    raw: dict[str, Any] | None = None,
) -> ExperimentSpec:
    """Read, override and validate an experiment (:class:`ConfigError` names the field)."""
    data = read_yaml(path) if raw is None else json.loads(json.dumps(raw))
    data = apply_overrides(data, overrides or [])
    origin = f"{path}: " if path else ""
    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            origin + "invalid experiment\n" + format_validation(exc, "", ExperimentSpec)
        ) from None
    try:
        space.parse(spec.config, ("config",))
        validate_trainer_config(spec)
        check_consistency(spec)
    except ConfigError as exc:
        raise ConfigError(origin + "invalid experiment\n" + str(exc)) from None
    return spec


def dump_yaml(spec: ExperimentSpec) -> str:
    return yaml.safe_dump(spec.resolved(), sort_keys=False)
