"""The Dask cluster the flow's part tasks run on: a local one, or an existing one given its address.

A local cluster has one single-threaded worker process per core, or with `gpus` one per GPU, each pinned to its
own GPU by CUDA_VISIBLE_DEVICES (its GPU first, so that it is device 0 inside the worker, where DALI decodes),
as dask-cuda's LocalCUDACluster pins its workers. On an existing cluster, pin the workers when starting them
(`CUDA_VISIBLE_DEVICES=i dask worker ...`, or dask-cuda's `dask cuda worker`).
"""

import copy
import os

from pipeline.common.cli import Refused

# glibc settings for local Dask workers. Dask's nanny sets MALLOC_TRIM_THRESHOLD_=64 KiB before it spawns a
# worker; setting any malloc threshold switches off glibc's adaptive mmap threshold, so every decoded image
# (MBs) was mmapped, faulted in and unmapped again (docs/performance.md). A fixed 32 MiB mmap threshold (glibc's
# maximum) and a 128 MiB trim threshold restore the reuse of freed memory.
WORKER_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(128 << 20)}


def local_worker_config() -> None:
    """Make local Dask worker processes started from now on in this process use `WORKER_MALLOC_ENV` (glibc reads
    it when a process starts, so it goes through Dask's pre-spawn environment)."""
    import dask

    dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_MALLOC_ENV.items()})


def gpu_visible_devices(gpu: int, n_gpus: int) -> str:
    """CUDA_VISIBLE_DEVICES of the worker of GPU `gpu`: that GPU first, then the others in turn."""
    return ",".join(str((gpu + k) % n_gpus) for k in range(n_gpus))


def local_cluster(workers: int = 0, gpus: int = 0, dashboard: bool = False):
    """A started local cluster: `workers` single-threaded worker processes, or one per GPU with `gpus`; with
    `dashboard`, its Dask dashboard on a free port of 127.0.0.1, whose address is printed."""
    from distributed import LocalCluster

    local_worker_config()
    # Everything on loopback: the scheduler serves /info (workers, logs, call stacks) over HTTP even without the
    # dashboard, and on all interfaces unless told otherwise.
    kwargs = {"threads_per_worker": 1, "processes": True, "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}
    kwargs |= {} if dashboard else {"scheduler_kwargs": {"dashboard": False}}
    if not gpus:
        cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, **kwargs)
        return _announce(cluster, dashboard)

    class GPUCluster(LocalCluster):
        """Worker i (named i) sees GPU i first."""

        def new_worker_spec(self):
            name = min(set(range(gpus)) - set(self.worker_spec))
            spec = copy.deepcopy(self.new_spec)
            spec["options"] |= {"name": name, "env": {"CUDA_VISIBLE_DEVICES": gpu_visible_devices(name, gpus)}}
            return {name: spec}

    cluster = GPUCluster(n_workers=0, **kwargs)  # LocalCluster's own first workers bypass new_worker_spec
    cluster.scale(gpus)
    return _announce(cluster, dashboard)


def _announce(cluster, dashboard: bool):
    if dashboard:
        print(f"Dask dashboard: {cluster.dashboard_link}", flush=True)
    return cluster


def dask_runner(address: str | None, workers: int | None, gpus: int = 0, dashboard: bool = False, security=None):
    """A DaskTaskRunner on `address` (its client with `security`, a `distributed.Security`), or on a
    `local_cluster` of `workers` processes or `gpus` GPUs."""
    from prefect.client.orchestration import get_client
    from prefect_dask import DaskTaskRunner

    # Workers report task states to the API this flow uses; without its address in their environment each
    # local worker process would start a temporary Prefect server of its own.
    os.environ.setdefault("PREFECT_API_URL", str(get_client().api_url).rstrip("/"))
    if address:
        return DaskTaskRunner(address=address, client_kwargs={"security": security} if security else {})
    kwargs = {"workers": workers or 0, "gpus": gpus, "dashboard": dashboard}
    return DaskTaskRunner(cluster_class=local_cluster, cluster_kwargs=kwargs)


def security_of(spec: str):
    """The `distributed.Security` of `--dask-security`: `ca=FILE,cert=FILE,key=FILE` (the CA that signed the
    cluster's certificates, and the flow's own certificate and key; encryption required), or `config` (Dask's
    `distributed.comm.tls` settings). Refused naming what is wrong."""
    from distributed import Security

    if spec == "config":
        return Security()
    fields = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
    if set(fields) != {"ca", "cert", "key"} or len(spec.split(",")) != 3:
        raise Refused(f"--dask-security {spec!r}: expected ca=FILE,cert=FILE,key=FILE or config")
    for name, path in fields.items():
        if not os.path.isfile(path):
            raise Refused(f"--dask-security: no {name} file {path}")
    return Security(tls_ca_file=fields["ca"], tls_client_cert=fields["cert"], tls_client_key=fields["key"],
                    require_encryption=True)  # fmt: skip


def check_dask_address(address: str, security=None, timeout: float = 10.0) -> None:
    """Raise ConnectionError with one line unless a Dask scheduler answers at `address` and accepts `security`."""
    from distributed import Client

    try:
        Client(address, timeout=f"{timeout}s", security=security).close()
    except Exception as e:  # noqa: BLE001 - reported as one line by the caller
        why = " ".join(str(e).split())[:160]
        raise ConnectionError(f"no Dask scheduler accepts this client at {address}: {type(e).__name__}: {why}") from e
