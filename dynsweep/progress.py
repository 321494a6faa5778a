"""Progress of counted work (analysis tasks, FID samples), with no heavy imports.

:class:`Bar` is redrawn in place in a terminal and prints one line at the end otherwise (a CI
log, a file). The sweep's live trial table, a Ray Tune callback, is
:class:`orchestrator.progress.SweepProgress`.
"""

from __future__ import annotations

import sys
import time


def interactive() -> bool:
    return sys.stderr.isatty()


def eta(done: float, total: float, elapsed: float) -> str:
    if done <= 0 or done >= total:
        return "-"
    seconds = elapsed * (total - done) / done
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds < 86400 else ">1 day"


class Bar:
    """``with Bar("analysis", total) as bar: ... bar.update()`` (see the module doc)."""

    def __init__(self, label: str, total: int, live: bool | None = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.live = interactive() if live is None else live
        self.started = time.monotonic()

    def __enter__(self) -> Bar:
        return self

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.live:
            elapsed = time.monotonic() - self.started
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            print(
                f"\r{self.label}: [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
                f"  ETA {eta(self.done, self.total, elapsed)}",
                end="", file=sys.stderr, flush=True,
            )  # fmt: skip

    def __exit__(self, *exc) -> None:
        if self.total == 0:
            return
        seconds = time.monotonic() - self.started
        end = "\n" if self.live else ""
        print(f"{end}{self.label}: {self.done}/{self.total} done in {seconds:.1f} s",
              file=sys.stderr, flush=True)  # fmt: skip
