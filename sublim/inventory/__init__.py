"""`sublim-store`: what the artifact store holds, which of it no job refers to, and pruning that.

    sublim-store du [--artifacts DIR] [--json]          size and count per stage
    sublim-store du --jobs DIR [DIR ...]                 ... and per experiment (what its jobs use)
    sublim-store ls [STAGE] [--artifacts DIR] [--json]  each artifact: key, size, age, provenance, upstream, hits
    sublim-store unused --jobs DIR [DIR ...]            what no job under DIR refers to (with its upstream)
    sublim-store prune --jobs DIR [DIR ...] [--yes]     remove that (a dry run without --yes)

The store (sublim.cache) holds `<stage>/<key>/` with `spec.json` = {stage, version, key, spec,
provenance} (sublim.pipeline.record); a spec names its upstream artifacts as `<stage>:<key>[/<sub>]`
refs (sublim.spec.parse_artifact_ref). A job folder (`outputs/...`, `multirun/<date>/<time>/<n>/`)
names the keys of its cell in `metrics.json` (or `cell.json`) under "keys"; an MNIST job's
metrics.json from before it named its key is matched to the mnist artifact whose metrics.json it
copies. A sweep's `sweep_plan.json` names its cells: those without a result yet (not started,
running, failed, killed) are planned as `dry_run` would (sublim.inventory.planned), so a grid
stopped part way keeps what its remaining cells will reuse. An artifact is *used* when a job or
such a cell refers to it or to anything downstream of it (a fine-tune a job names keeps its
filter, sample, teacher, reference, convert...).

Pruning is safe against jobs running beside it: each removal takes the artifact's store lock first
(a live lock means a job is computing it: it is kept), then renames the folder to
`<stage>/.pruning/<key>.<token>` and deletes that, so no reader ever sees half a folder under a
real key. Artifacts used (hit or published) within `--keep-recent` (default 1 h) are kept too: a
running job names its keys only when it ends, and may still read an upstream it computed earlier.
`.work/<key>` folders whose lock is not live are leftovers of killed jobs (resumable, so only
removed when idle longer than --keep-recent too). Sizes are apparent sizes (bytes of the files), in
decimal units (1 MB = 10^6 bytes).

Stdlib only (besides PyYAML, when present, to read a job's `.hydra/config.yaml`), except the
planning of a sweep's unfinished cells, which composes their configs.

The package, one job a module: contents (scan: what the store holds), usage (du's totals, per
stage and per experiment), refs (what jobs refer to, its upstream closure, what is unused), planned
(the keys of a sweep's unfinished cells), removal (prune), units (sizes, ages),
listing (the text printed), cli (`main`, which the console script runs). This module re-exports
their public names.
"""
from __future__ import annotations

from sublim.inventory.cli import main
from sublim.inventory.contents import (Artifact, Inventory, Leftover, StoreError, check_store, read_events,
                                       scan, spec_refs)
from sublim.inventory.refs import DEFAULT_KEEP_RECENT_S, Item, JobRefs, Unused, closure, find_unused, job_refs
from sublim.inventory.removal import PruneResult, prune
from sublim.inventory.units import human
from sublim.terminal import ago
from sublim.inventory.usage import disk_usage, experiment_usage

__all__ = ["Artifact", "DEFAULT_KEEP_RECENT_S", "Inventory", "Item", "JobRefs", "Leftover", "PruneResult",
           "StoreError", "Unused", "ago", "check_store", "closure", "disk_usage", "experiment_usage", "find_unused",
           "human", "job_refs", "main", "prune", "read_events", "scan", "spec_refs"]
