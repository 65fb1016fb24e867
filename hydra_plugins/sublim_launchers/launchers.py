"""sublim's sweeper and launchers: every cell checked before launch, every cell's outcome kept.

The sweeper validates every cell of the grid (all batches) against sublim's typed schema before
the first job starts, so a typo in a grid fails before anything is submitted.

Hydra's submitit launcher returns `[j.results()[0] for j in jobs]`, which raises at the first job
that died without a result (cancelled, out of memory, out of requeues) and abandons the rest of
the grid in the report. These wait for every job and turn a dead job into a recorded failure.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

from sublim.sweep import write_outcome

log = logging.getLogger(__name__)


class Sweeper(BasicSweeper):
    """BasicSweeper that validates every cell of the grid (all batches) before the first launch."""

    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[dict[str, str]] = None):
        super().__init__(max_batch_size=max_batch_size, params=params)
        self._checked = False

    def validate_batch_is_legal(self, batch) -> None:
        if self._checked:
            return
        from sublim.config import to_typed
        from sublim.checks import check

        assert self.overrides is not None and self.hydra_context is not None and self.config is not None
        cells = [list(o) for b in self.overrides for o in b]
        for overrides in cells:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            try:
                check(to_typed(cfg))
            except Exception as e:
                raise ValueError(f"cell {' '.join(overrides)}: {e}") from None
        log.info("checked %d cells against the schema", len(cells))
        self._checked = True


class LocalLauncher(BasicLauncher):
    """Jobs one after another in this process (failures are recorded by the task itself)."""


class _CollectingSubmitit(BaseSubmititLauncher):
    def _executor(self):
        import submitit

        init = {"folder": self.params["submitit_folder"]}
        if "max_num_timeout" in self.params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = self.params["max_num_timeout"]
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{
            k if k in base else f"{self._EXECUTOR}_{k}": v
            for k, v in self.params.items() if k not in ("submitit_folder", "max_num_timeout")})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        params = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = self._executor().map_array(self, *zip(*params))
        log.info("submitted %d jobs (%s): %s", len(jobs), self._EXECUTOR, ", ".join(j.job_id for j in jobs))
        results = []
        for (overrides, _, idx, _, _), job in zip(params, jobs):
            try:
                results.append(job.results()[0])
            except Exception as e:  # died without a result: record it, keep collecting
                job_dir = sweep_dir / str(idx)
                write_outcome(job_dir, "failed", overrides, f"job {job.job_id} died: {type(e).__name__}: {e}")
                ret = JobReturn(overrides=overrides, working_dir=str(job_dir), task_name="sublim")
                ret.status, ret.return_value = JobStatus.COMPLETED, None
                results.append(ret)
        return results


class LocalSubmititLauncher(_CollectingSubmitit):
    """Subprocesses on this machine, at most `max_parallel` at once (submitit local has no bound)."""

    _EXECUTOR = "local"

    def __init__(self, max_parallel: int = 2, **params: Any) -> None:
        super().__init__(**params)
        self.max_parallel = max(1, int(max_parallel))

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        results: list[JobReturn] = []
        for i in range(0, len(job_overrides), self.max_parallel):
            results += super().launch(job_overrides[i:i + self.max_parallel], initial_job_idx + i)
        return results


class SlurmLauncher(_CollectingSubmitit):
    _EXECUTOR = "slurm"
