"""One snapshot of a sweep: the cells read from its files (read.read_cells) with the time-left
estimate over them (timeleft.estimate), taken at one moment. It is what the rendering, --json and
--watch print and compare; kept apart from both of its halves so neither has to know the other.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sublim import cellstate
from sublim.status.read import Cell, read_cells
from sublim.status.timeleft import Estimate, estimate

FINAL = ("ok", "failed", "dead")


@dataclass
class Snapshot:
    sweep: Path
    cells: list[Cell]
    estimate: Estimate
    now: float

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in cellstate.STATES}
        for c in self.cells:
            out[c.state.state] = out.get(c.state.state, 0) + 1
        return out

    def final(self) -> bool:
        return all(c.state.state in FINAL for c in self.cells)


def snapshot(sweep_dir: str | Path, artifacts: Optional[str | Path] = None, now: Optional[float] = None) -> Snapshot:
    """Every cell of the sweep with its state, name, result or current stage, and the time left."""
    sweep = Path(sweep_dir)
    now = time.time() if now is None else float(now)
    cells = read_cells(sweep, artifacts, now)
    return Snapshot(sweep, cells, estimate(cells, now), now)
