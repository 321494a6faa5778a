"""What a sweep needs when its trials can run on other machines than the driver.

A trial on another node sees none of the driver's disk. So, when the Ray cluster has more
than one node that can run trials, the tracking store must be reachable from every node (a
tracking server, or a database server — not a sqlite file) and artifacts must not go to a
folder on the driver's disk (``file://`` artifact locations). Such a sweep is refused before
any trial starts, with the fix in the message. A local sweep storage folder is allowed (an NFS
mount looks the same); trials that cannot see it resume from Tune's own checkpoints.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from dynsweep.errors import ConfigError

FIX = (
    "run a tracking server that every node reaches, with artifacts in object storage — "
    "dynsweep server --backend-store-uri postgresql://USER:PASSWORD@DBHOST/mlflow "
    "--artifacts-destination s3://BUCKET/mlflow --host 0.0.0.0 — and pass "
    "--tracking-uri http://SERVER:5000 (see clusters/README.md)"
)


def worker_nodes() -> int:
    """Alive nodes of the connected Ray cluster that offer CPUs or GPUs to trials."""
    import ray

    return sum(
        1
        for node in ray.nodes()
        if node.get("Alive") and (node["Resources"].get("CPU") or node["Resources"].get("GPU"))
    )


def local_only(uri: str, artifact_location: str | None) -> str | None:
    """Why the tracking store or its artifacts live on the driver's disk only, or ``None``."""
    if uri.startswith("sqlite:") or "://" not in uri or uri.startswith("file:"):
        return f"tracking store {uri} is a file on this machine"
    if artifact_location and urlsplit(artifact_location).scheme in ("", "file"):
        return f"artifacts go to {artifact_location}, a folder on this machine"
    return None


def check_multi_node(uri: str, artifact_location: str | None, nodes: int | None = None) -> None:
    """Refuse a store that only this machine can use, when trials may run on other nodes."""
    nodes = worker_nodes() if nodes is None else nodes
    if nodes <= 1:
        return
    reason = local_only(uri, artifact_location)
    if reason:
        raise ConfigError(
            f"tracking.uri: the Ray cluster has {nodes} nodes that run trials, but the {reason}"
            f", which trials on the other nodes cannot reach; {FIX}"
        )
