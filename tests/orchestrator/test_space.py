from __future__ import annotations

import pytest
from ray import tune

from dynsweep.errors import ConfigError
from orchestrator import space


def test_parse_finds_domains_at_any_depth():
    parsed = space.parse(
        {
            "a": {"b": {"grid": [1, 2, 3]}},
            "c": {"loguniform": [1e-4, 1e-1]},
            "d": 5,
            "e": {"x": 1, "y": 2},
        }
    )
    found = dict(space.domains(parsed))
    assert found == {
        ("a", "b"): space.Domain("grid", (1, 2, 3)),
        ("c",): space.Domain("loguniform", (1e-4, 1e-1)),
    }
    assert space.grid_size(parsed) == 3


def test_to_tune_builds_tune_domains():
    parsed = space.parse(
        {
            "lr": {"uniform": [0.1, 0.2]},
            "w": {"choice": [1, 2]},
            "n": {"randint": [1, 4]},
            "g": {"grid": ["a", "b"]},
            "k": 3,
        }
    )
    tuned = space.to_tune(parsed)
    assert isinstance(tuned["lr"], tune.search.sample.Float)
    assert isinstance(tuned["w"], tune.search.sample.Categorical)
    assert isinstance(tuned["n"], tune.search.sample.Integer)
    assert tuned["g"] == {"grid_search": ["a", "b"]}
    assert tuned["k"] == 3


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"grid": []}, "x.grid: expected a non-empty list"),
        ({"uniform": [1, 0]}, "x.uniform: expected finite low < high"),
        ({"uniform": [0, 1, 2]}, "x.uniform: expected [low, high]"),
        ({"loguniform": [0, 1]}, "x.loguniform: expected 0 < low"),
        ({"randint": [0.5, 3]}, "x.randint: expected two integers"),
        ({"choice": 3}, "x.choice: expected a list"),
    ],
)
def test_bad_domains_name_their_path(bad, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        space.parse({"x": bad})


def test_corners_cover_every_value_and_range_ends():
    parsed = space.parse({"a": {"grid": [1, 2]}, "b": {"randint": [3, 7]}})
    values = [v for _, v in space.variants(parsed)]
    assert values == [{"a": 1, "b": 3}, {"a": 2, "b": 3}, {"a": 1, "b": 6}]
    assert space.to_plain(parsed) == {"a": {"grid": [1, 2]}, "b": {"randint": [3, 7]}}
