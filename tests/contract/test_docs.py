"""The docs match the code where a test can tell: every project path they name exists, and
the README's annotated experiment file validates as a spec."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "clusters" / "README.md", *sorted(ROOT.glob("docs/**/*.md"))]
TOP = "|".join(
    ["dynsweep", "trainers", "tracking", "analysis", "orchestrator", "configs", "docs", "tests"]
    + ["benchmarks", "clusters", "reproductions"]
)
# A path of this repository inside backticks, e.g. `orchestrator/packing.py`, `configs/x.yaml`;
# images only under docs/ (`analysis/edm/rho_by_E.png` is an artifact path inside a run)
PATH = re.compile(rf"`((?:{TOP})/[\w./-]*?\.(?:py|yaml|sh|md)|docs/[\w./-]*?\.png)(?:[:#][^`]*)?`")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_the_docs_name_exists(doc):
    named = set(PATH.findall(doc.read_text()))
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"{doc.relative_to(ROOT)} names files that do not exist: {missing}"


def test_the_path_pattern_finds_what_the_readme_names():
    named = set(PATH.findall((ROOT / "README.md").read_text()))
    assert {"docs/architecture.md", "tests/test_quickstart.py", "trainers/direct_io.py"} <= named
    assert not any(p.endswith(".png") and not p.startswith("docs/") for p in named)


def test_no_doc_points_outside_the_repository():
    for doc in DOCS:
        assert "../shared" not in doc.read_text(), doc


def test_the_readmes_annotated_experiment_file_validates():
    from orchestrator.spec import load_spec

    text = (ROOT / "README.md").read_text()
    section = text[text.index("## An experiment file") :]
    block = section[section.index("```yaml") + len("```yaml") : section.index("```\n", 10)]
    raw = yaml.safe_load(block)
    assert {"name", "trainer", "config", "analysis", "loop", "resources"} <= set(raw)
    spec = load_spec(raw=raw)
    assert spec.num_trials() == 4 and [s.step for s in spec.analysis] == [
        "edm",
        "ccm",
        "weight_pca",
    ]
