"""sublim's sweeper and launchers: every cell checked before launch, every cell's outcome kept.

The sweeper validates every cell of the grid (all batches) against sublim's typed schema before
the first job starts, so a typo in a grid fails before anything is submitted. Then it shows one
live status of the grid until its last job returns (sublim.status.live; SUBLIM_LIVE=0 turns it off).

Hydra's submitit launcher returns `[j.results()[0] for j in jobs]`, which raises at the first job
that died without a result (cancelled, out of memory, out of requeues) and abandons the rest of
the grid in the report. These wait for every job and turn a dead job into a recorded failure.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from sublim.sweep import live, write_outcome, write_plan

log = logging.getLogger(__name__)


class Sweeper(BasicSweeper):
    """BasicSweeper that validates every cell of the grid (all batches) before the first launch.

    Each cell is composed once here. Cells that differ only in plain values (seed=0..4) share one
    composition of their config groups, with the values applied as Hydra applies command-line
    values; so checking (and, with dry_run=true, planning) a 30-cell grid takes seconds. A dry run
    prints every cell's plan here and launches nothing."""

    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[dict[str, str]] = None):
        super().__init__(max_batch_size=max_batch_size, params=params)
        self._checked = False
        self._watch = None

    def sweep(self, arguments: list[str]) -> Any:
        self._dry_run = False
        self._watch = None
        try:
            return super().sweep(arguments)
        except _DryRunDone:
            return []
        finally:
            if self._watch is not None:  # the last events and the count; the streams back to the terminal
                self._watch.stop()
                self._watch = None

    def _cell_configs(self, cells: list[list[str]]):
        """(overrides, composed config) per cell, composing each distinct set of group choices once."""
        import copy

        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.core.override_parser.overrides_parser import OverridesParser

        loader = self.hydra_context.config_loader
        parser = OverridesParser.create()
        composed: dict[tuple[str, ...], DictConfig] = {}
        for overrides in cells:
            parsed = parser.parse_overrides(overrides)
            groups = [o for o in parsed if o.is_hydra_override() or loader.repository.group_exists(o.key_or_group)]
            values = [o for o in parsed if o not in groups]
            lines = tuple(o.input_line for o in groups)
            if lines not in composed:
                composed[lines] = loader.load_sweep_config(self.config, list(lines))
            cfg = copy.deepcopy(composed[lines])
            ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
            yield overrides, cfg

    def validate_batch_is_legal(self, batch) -> None:
        if self._checked:
            return
        from sublim.config import to_typed
        from sublim.errors import ConfigError

        assert self.overrides is not None and self.hydra_context is not None and self.config is not None
        cells = [list(o) for b in self.overrides for o in b]
        plan, typed = [], []
        for idx, (overrides, cfg) in enumerate(self._cell_configs(cells)):
            try:
                typed.append(to_typed(cfg))
                _check(typed[-1])
            except (ConfigError, OmegaConfBaseException) as e:  # before any cell runs: one line naming cell and key
                sys.exit(f"config error in cell {' '.join(overrides)}: {e}")
            except Exception as e:
                raise ValueError(f"cell {' '.join(overrides)}: {e}") from None
            plan.append((idx, overrides, _job_folder(cfg, idx)))
        log.info("checked %d cells against the schema", len(cells))
        self._checked = True
        if typed and all(c.dry_run for c in typed):
            _print_plans(cells, typed, self.config)
            raise _DryRunDone()
        write_plan(Path(str(self.config.hydra.sweep.dir)), plan)
        if live():  # one status for the whole grid from here on; each job's output goes to its own log
            from sublim.status.live import watch_grid

            self._watch = watch_grid(Path(str(self.config.hydra.sweep.dir)))


class _DryRunDone(Exception):
    """Every cell's plan is printed: nothing to launch."""


def _check(cfg) -> None:
    from sublim.checks import check

    check(cfg)


def _print_plans(cells: list[list[str]], typed: list, config: DictConfig) -> None:
    """dry_run=true over a grid: each cell's plan (hit/miss per stage), without launching a job."""
    from sublim.cache import Store
    from sublim.pipeline import describe
    from sublim.plan import build
    from sublim.target import resolve

    from sublim import api_usage

    launcher = OmegaConf.to_container(config.hydra.launcher, resolve=False)
    misses, usage = 0, {}
    for overrides, cfg in zip(cells, typed):
        store = Store(Path(cfg.paths.artifacts).resolve())
        try:
            p = build(cfg, resolve(cfg.device, cfg.sampler.backend, launcher))
        except Exception as e:
            sys.exit(f"config error in cell {' '.join(overrides)}: {e}")
        misses += sum(not store.exists(s.stage, s.key) for s in p.steps)
        usage |= api_usage.missing_usage(p, store)
        print(f"plan for cell {' '.join(overrides)} (artifacts: {store.root}):\n{describe(p, store)}", flush=True)
    print(f"dry run: {len(cells)} cells planned, {misses} stage runs missing; nothing launched", flush=True)
    if usage:
        print(api_usage.total(usage), flush=True)


def _job_folder(cfg: DictConfig, idx: int) -> Optional[str]:
    """The folder job `idx` will write, relative to the sweep dir (hydra.sweep.subdir resolved as
    the launchers resolve it), or None when it depends on what only the job knows."""
    try:
        with open_dict(cfg.hydra.job) as job:
            job.num = idx
        return str(cfg.hydra.sweep.subdir)
    except Exception:
        return None


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
                results.append(_failed(sweep_dir, idx, overrides, f"job {job.job_id} died: {type(e).__name__}: {e}"))
        return results


def _run_in_worker(blob: bytes, overrides: list[str], idx: int) -> JobReturn:
    """One job in a pool worker, as Hydra's basic launcher runs it in-process."""
    import cloudpickle
    from hydra.core.utils import run_job, setup_globals
    from omegaconf import open_dict

    hydra_context, task_function, config, singleton_state = cloudpickle.loads(blob)
    Singleton.set_state(singleton_state)
    setup_globals()
    sweep_config = hydra_context.config_loader.load_sweep_config(config, overrides)
    with open_dict(sweep_config.hydra.job) as job:
        job.id = f"{os.getpid()}_{idx}"
        job.num = idx
    ret = run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                  job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    # what travels back to the parent: no configs (their schema classes do not pickle across
    # processes), an error as text; the cell's own outcome.json has the details
    back = JobReturn(overrides=ret.overrides, working_dir=ret.working_dir, task_name=ret.task_name, status=ret.status)
    back._return_value = (ret._return_value if ret.status == JobStatus.COMPLETED
                          else RuntimeError(f"{type(ret._return_value).__name__}: {ret._return_value}"))
    return back


class LocalPoolLauncher(Launcher):
    """Jobs on this machine in `max_parallel` worker processes.

    A job starts as soon as a worker is free, and each worker runs job after job, so torch,
    transformers and TRL are imported once per worker, not once per job: a grid of small or
    cached cells (the CPU demo: 30) costs seconds of overhead, not minutes. A stage that holds
    a GPU still runs in its own fresh process (`isolate`), so a long-lived worker keeps no GPU
    memory. A worker that dies (killed, out of memory) breaks the pool: every job not finished by
    then is recorded as failed in its outcome.json, and the same command re-runs only those (the
    cache keeps every finished stage).
    """

    def __init__(self, max_parallel: int = 2) -> None:
        self.max_parallel = max(1, int(max_parallel))
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        import cloudpickle
        from hydra.core.utils import configure_log, setup_globals

        from sublim.lifeline import worker_lifeline

        assert self.config is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        blob = cloudpickle.dumps((self.hydra_context, self.task_function, self.config, Singleton.get_state()))
        workers = min(self.max_parallel, len(job_overrides))
        log.info("%d jobs on %d local workers", len(job_overrides), workers)
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=worker_lifeline)  # a killed sweep leaves no orphan workers
        try:
            futures = []
            for i, overrides in enumerate(job_overrides):
                idx = initial_job_idx + i
                log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
                futures.append(pool.submit(_run_in_worker, blob, list(overrides), idx))
            results = []
            for i, (overrides, future) in enumerate(zip(job_overrides, futures)):
                try:
                    results.append(future.result())
                except Exception as e:  # the worker died: record the job, keep collecting
                    results.append(_failed(sweep_dir, initial_job_idx + i, list(overrides),
                                           f"worker died: {type(e).__name__}: {e}"))
            return results
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _failed(sweep_dir: Path, idx: int, overrides: list[str], error: str) -> JobReturn:
    """A job that died without a result, recorded in its outcome.json like a failed cell."""
    job_dir = sweep_dir / str(idx)
    write_outcome(job_dir, "failed", overrides, error)
    ret = JobReturn(overrides=overrides, working_dir=str(job_dir), task_name="sublim")
    ret.status, ret.return_value = JobStatus.COMPLETED, None
    return ret


class SlurmLauncher(_CollectingSubmitit):
    _EXECUTOR = "slurm"
