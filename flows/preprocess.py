"""Prefect flow `preprocess-imagenet`: a photo folder -> a Zarr v3 store of L, bins, labels and priors.

Wiring only: `pipeline.build.build_store` does the work, each part a Prefect task on the flow's Dask task
runner (`flows.cluster`: a local cluster, one worker per core or per GPU, or an existing one given its address).
The flow's parameters and the command line's flags are the fields of `PreprocessConfig` (what decides the
store's content) and of `RunOptions` (where and how it runs).

    python -m flows.preprocess SOURCE STORE [--split train] [--size 224] [--gpus N] ...

runs the flow in this process; `python -m flows.serve` serves it as the deployment `preprocess-imagenet/default`.
"""

import contextlib
import dataclasses
import logging
import os
import sys
from dataclasses import dataclass

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.settings import (
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    PREFECT_SERVER_ANALYTICS_ENABLED,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    temporary_settings,
)

from flows.artifacts import Progress, publish_summary, quality_check
from flows.cluster import check_dask_address, dask_runner, security_of
from pipeline.build import build_store, stage_part
from pipeline.common.cli import ArgumentParser, Refused, Unusable, command, make_dir
from pipeline.common.settings import add_flags, given, setting, signature
from pipeline.config import PreprocessConfig
from pipeline.imagenet import archive_source
from pipeline.layouts import TAR_SHARDS, detect, entries, parquet_files
from pipeline.storage import first_contact, location, parse_options
from pipeline.storage.files import check_writable, has_files
from pipeline.store.lifecycle import check_safe, check_staging, hold

FLOW_NAME = "preprocess-imagenet"
# A flow run in this process: no telemetry (machines without a network wait on it), and time for the temporary
# server to start on a loaded machine.
LOCAL_SETTINGS = {PREFECT_SERVER_ANALYTICS_ENABLED: False, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 120}
# Retried on a transient failure (a worker lost, a file system hiccup): staging a part is idempotent.
stage_task = task(name="stage-part", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])(stage_part)


class QualityFailed(RuntimeError):
    """The store was written, but its data-quality check failed (the `data-quality` artifact says which checks)."""


@dataclass(frozen=True)
class RunOptions:
    """Where the store goes and what runs the parts: none of it changes the store's content."""

    store: str = setting(help="the Zarr v3 store to write (one per split)")
    dask_address: str | None = setting(None, "scheduler of an existing Dask cluster (default: a local one)")
    workers: int | None = setting(None, "local Dask worker processes (default: one per core)")
    gpus: int = setting(0, "local workers: one per GPU, each pinned to its own")
    dashboard: bool = setting(False, "serve the Dask dashboard of a local cluster and print its address")
    overwrite: bool = setting(False, "rebuild a store built with other settings")
    quality: bool = setting(True, "run the data-quality check on the store, as a task of the flow")
    quality_out: str = setting("", "where the quality check writes its json, md and png (default: beside the store)")
    zhang_prior: str | None = setting(None, "Zhang et al.'s prior_probs.npy, for the quality check's KL")
    dask_security: str | None = setting(
        None, "TLS for --dask-address: ca=FILE,cert=FILE,key=FILE (the flow's client certificate), or config"
    )
    storage_option: tuple[str, ...] = setting(
        (), "KEY=VALUE for the object store (repeatable); no credentials", quiet=True
    )

    def __post_init__(self):
        parse_options(self.storage_option)  # refused here when a credential is among them
        if self.dask_security:
            security_of(self.dask_security)
        if self.workers is not None and self.workers < 1:
            raise Refused("--workers must be >= 1")
        if self.gpus < 0 or (self.gpus and (self.dask_address or self.workers not in (None, self.gpus))):
            raise Refused("--gpus N starts N local workers, one per GPU: not with --dask-address or other --workers")


RUN_FIELDS = {f.name for f in dataclasses.fields(RunOptions)}


def _preprocess(**params) -> dict:
    """Preprocess `source/split` into the store `store` (Sec. 3.2, 4.1, 4.2 of Wang et al.)."""
    run = RunOptions(**{k: v for k, v in params.items() if k in RUN_FIELDS})
    options = parse_options(run.storage_option)  # they travel with the locations, to every worker
    cfg = PreprocessConfig(**{k: v for k, v in params.items() if k not in RUN_FIELDS}).located(options)
    target = location(run.store, options)
    workers = run.gpus or run.workers or os.cpu_count() or 1
    with contextlib.ExitStack() as stack:
        runner = None

        def submit(kwargs: dict):  # the cluster starts with the first part: not for a finished store
            nonlocal runner
            if runner is None:
                security = security_of(run.dask_security) if run.dask_security else None
                cluster = dask_runner(run.dask_address, run.workers, run.gpus, run.dashboard, security)
                runner = stack.enter_context(cluster)
            return runner.submit(stage_task, parameters=kwargs)

        result = build_store(cfg, target, submit, workers, run.overwrite, get_run_logger(), Progress(run.store))
    publish_summary(result)
    if run.quality:
        beside = target.resolve().parent.local  # a local store's report goes beside it; a bucket's, here
        out = run.quality_out or (str(beside) if beside else "reports/quality")
        result |= quality_check(result["store"], out, run.zhang_prior, run.storage_option)
        if result["quality"] == "FAIL":
            raise QualityFailed(f"{result['store']} fails its data-quality check: {', '.join(result['failed'])}")
    return result


_preprocess.__signature__ = signature(PreprocessConfig, RunOptions)
preprocess_imagenet = flow(name=FLOW_NAME, log_prints=True)(_preprocess)


def run_in_process(**params) -> dict:
    """Run the flow in this process (the command line, the benchmarks).

    Prefect's heartbeat thread sleeps in 1 s steps and a flow run joins it on exit, rounding every run up to a
    whole second; it only serves an automation that marks silent runs as crashed, so an in-process run goes
    without it unless PREFECT_FLOWS_HEARTBEAT_FREQUENCY is set. Runs of the served deployment keep it. Its
    temporary server sends no telemetry and gets two minutes to start on a loaded machine (`LOCAL_SETTINGS`).
    """
    updates = dict(LOCAL_SETTINGS)
    if "PREFECT_FLOWS_HEARTBEAT_FREQUENCY" not in os.environ:
        updates[PREFECT_FLOWS_HEARTBEAT_FREQUENCY] = None
    runs = logging.getLogger("prefect.flow_runs")
    runs.addFilter(_refusals_in_one_line)
    try:
        with temporary_settings(updates=updates):
            return preprocess_imagenet(**params)
    finally:
        runs.removeFilter(_refusals_in_one_line)


def _refusals_in_one_line(record: logging.LogRecord) -> bool:
    """Prefect logs a flow's exception with its traceback; a refusal (`Refused`: a store another run writes, ...;
    `Unusable`: a damaged store) is input the command says no to in one line, so its record goes without one."""
    if record.exc_info and isinstance(record.exc_info[1], Refused | Unusable):
        record.exc_info, record.exc_text = None, None
    return True


def check_inputs(cfg: PreprocessConfig, run: RunOptions) -> None:
    """Refuse, in one line and writing nothing, a source with nothing to read or a store the run must not touch
    (the source, a foreign folder, one being written by another run, ...)."""
    cfg = archive_source(cfg)  # an archive given as SOURCE: the one source of its folder
    root = location(cfg.source)
    split = root / cfg.split
    shards = any(f.endswith(TAR_SHARDS) for f in entries(root)[1])
    if not (cfg.list or split.is_dir() or split.is_file() or shards or parquet_files(root, cfg.split)):
        raise FileNotFoundError(f"no split folder {split}")
    layout = detect(root, cfg.split, cfg.layout, cfg.list)  # says what it found when nothing fits
    if layout in ("classes", "flat") and not has_files(split):
        raise Refused(f"no files under {split}")  # the flow discovers them, once
    store = location(run.store, parse_options(run.storage_option))
    check_safe(store, cfg, run.overwrite)  # refuses what it must not touch, before anything is written
    if not run.overwrite:
        check_staging(store)  # a damaged stamp or staged summary: one line now, not a traceback in the flow
    check_writable(store, "STORE")


@command
def main(argv=None) -> int:
    p = ArgumentParser(prog="colorize-preprocess", description=__doc__.split("\n\n")[0])
    add_flags(p, PreprocessConfig, positional=("source",))
    add_flags(p, RunOptions, positional=("store",))
    args = p.parse_args(argv)
    settings, options = given(args, PreprocessConfig), given(args, RunOptions)
    cfg, run = PreprocessConfig(**settings), RunOptions(**options)  # validated here, before Prefect starts
    storage = parse_options(run.storage_option)
    with first_contact():  # an endpoint that does not answer is reported within seconds, not minutes
        check_inputs(cfg.located(storage), run)
    if run.quality_out:
        make_dir(run.quality_out, "--quality-out", keep=False)
    if run.dask_address:
        check_dask_address(run.dask_address, security_of(run.dask_security) if run.dask_security else None)
    try:
        with hold(location(run.store, storage)):  # one writer per store: refused now
            print(run_in_process(**settings, **options))
    except QualityFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
