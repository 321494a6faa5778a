"""Write constraints.txt: the installed version of every package in dynsweep's dependency
closure (its requirements with the extras CI and the image install, recursively).

Run after `pip install -e '.[test,gcs]'` in the environment CI tested:
    python .ci/constraints.py > constraints.txt
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

EXTRAS = {"test", "postgres", "s3", "gcs", "deepspeed", "mpi"}


def closure(root: str, extras: set[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    todo = [(root, frozenset(extras))]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        name, want = todo.pop()
        if (name, want) in seen:
            continue
        seen.add((name, want))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency this environment does not have
        key = canonicalize_name(dist.metadata["Name"])
        if key != canonicalize_name(root):
            found[dist.metadata["Name"]] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            extras = {"", *want}
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras):
                continue
            todo.append((req.name, frozenset(req.extras)))
    return found


if __name__ == "__main__":
    pins = closure("dynsweep", EXTRAS)
    print("# Versions CI tested (python .ci/constraints.py > constraints.txt); use them with")
    print("#   pip install -c constraints.txt -e '.[test]'")
    print(f"# Python {sys.version.split()[0]}")
    for name in sorted(pins, key=str.lower):
        print(f"{name}=={pins[name]}")
