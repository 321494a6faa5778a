"""Fuzzed experiment files (hypothesis): each broken config gets one message naming the field,
exit status 2, no traceback, and Ray is never started (the ``no_ray`` fixture forbids it)."""

from __future__ import annotations

import copy

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import cli

VALID = {
    "name": "fuzz",
    "trainer": "classifier",
    "config": {"batch_size": 32, "model": {"widths": [16]}, "optimizer": {"lr": 0.05}},
    "stop": {"iterations": 20},
    "loop": {"report_every": 5, "checkpoint_every": 10},
    "resources": {"cpus": 1},
    "search": {"algorithm": "grid"},
    "scheduler": {"name": "fifo"},
    "tracking": {"uri": "sqlite:///mlflow.db"},
}

INTS = [
    "stop.iterations", "num_samples", "max_concurrent_trials", "max_failures",
    "loop.report_every", "loop.checkpoint_every", "loop.chunk_steps", "resources.workers",
    "config.batch_size", "config.probe_batch_size", "config.model.widths.0",
]  # fmt: skip
FLOATS = [
    "config.optimizer.lr",
    "config.optimizer.momentum",
    "resources.cpus",
    "config.val_fraction",
]
WORDS = [
    "mode",
    "trainer",
    "search.algorithm",
    "scheduler.name",
    "config.dataset",
    "loop.compression",
]
SECTIONS = ["", "stop", "loop", "resources", "search", "scheduler", "tracking", "config",
            "config.model", "config.optimizer"]  # fmt: skip
VALID_KEYS = {
    "": {"name", "trainer", "config", "seed", "metric", "mode", "search", "scheduler",
         "num_samples", "max_concurrent_trials", "pack", "resources", "stop", "loop",
         "max_failures", "tracking", "storage", "data_dir", "analysis"},
}  # fmt: skip

# Text that no validator reads as a number or a boolean ("nan", "inf", "yes" and "on" would).
letters = st.text("abcdfghjklmpqrsuvwxz", min_size=1, max_size=12)
not_a_number = st.one_of(letters, st.lists(st.integers(), min_size=2, max_size=3))


def set_path(raw: dict, dotted: str, value) -> None:
    node, keys = raw, dotted.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value


@st.composite
def broken_configs(draw):
    """(a broken config, the field its error must name)."""
    raw = copy.deepcopy(VALID)
    kind = draw(st.sampled_from(["type", "word", "unknown", "empty", "negative", "huge"]))
    if kind == "type":
        path = draw(st.sampled_from(INTS + FLOATS))
        set_path(raw, path, draw(not_a_number))
    elif kind == "word":
        path = draw(st.sampled_from(WORDS))
        set_path(raw, path, draw(st.one_of(letters.map(lambda w: w + "_x"), st.integers())))
    elif kind == "unknown":
        section = draw(st.sampled_from(SECTIONS))
        key = draw(letters.filter(lambda k: k not in VALID_KEYS.get(section, ())))
        path = f"{section}.{key}" if section else key
        set_path(raw, path, draw(st.one_of(st.integers(), letters)))
    elif kind == "empty":
        path = draw(st.sampled_from(["config.optimizer.lr", "config.batch_size", "seed"]))
        set_path(raw, path, {draw(st.sampled_from(["grid", "choice"])): []})
    elif kind == "negative":
        path = draw(st.sampled_from(INTS))
        set_path(raw, path, draw(st.integers(min_value=-(10**12), max_value=0)))
    else:  # a grid far beyond the trial limit
        sizes = draw(st.lists(st.integers(50, 200), min_size=3, max_size=4))  # >= 125,000
        for size, path in zip(sizes, ["config.batch_size", "config.probe_batch_size",
                                      "stop.iterations", "seed"]):  # fmt: skip
            if path == "stop.iterations":
                path = "config.model.widths.0"
            set_path(raw, path, {"grid": list(range(1, size + 1))})
        path = "config"
        if draw(st.booleans()):
            raw["num_samples"] = 10**6  # over num_samples' own limit instead
            path = "num_samples"
    return raw, path


def test_fuzzed_configs_get_one_clear_error_each(tmp_path, capsys, no_ray):
    seen = []

    @settings(
        max_examples=250,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(broken_configs())
    def check(case):
        raw, field = case
        path = tmp_path / "experiment.yaml"
        path.write_text(yaml.safe_dump(raw))
        code = cli.main(["sweep", str(path)])
        err = capsys.readouterr().err
        assert code == 2, (raw, err)
        assert "Traceback" not in err, err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert lines[0].startswith("dynsweep sweep: error:"), err
        named = field.removesuffix(".0")
        assert named in err, (field, err)
        seen.append(field)

    check()
    assert len(seen) >= 200
    assert not (tmp_path / "mlflow.db").exists()
    print(f"{len(seen)} fuzzed configs, {len(set(seen))} distinct fields, all refused with exit 2")
