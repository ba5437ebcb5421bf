"""The local Dask clusters the flow starts: GPU workers pinned one per GPU, glibc settings in every worker."""

import os

from distributed import Client

from flows.cluster import WORKER_MALLOC_ENV, gpu_visible_devices, local_cluster
from flows.preprocess import main


def _env():
    return {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", *WORKER_MALLOC_ENV)}


def test_each_gpu_worker_sees_its_own_gpu_first():
    with local_cluster(gpus=3) as cluster, Client(cluster) as client:
        client.wait_for_workers(3, timeout=60)
        seen = client.run(_env)
        names = {w["name"]: addr for addr, w in client.scheduler_info()["workers"].items()}
    assert sorted(names) == [0, 1, 2]
    for gpu, addr in names.items():
        assert seen[addr]["CUDA_VISIBLE_DEVICES"] == gpu_visible_devices(gpu, 3)
        assert seen[addr]["CUDA_VISIBLE_DEVICES"].split(",")[0] == str(gpu)
        assert {k: seen[addr][k] for k in WORKER_MALLOC_ENV} == WORKER_MALLOC_ENV
    assert gpu_visible_devices(1, 3) == "1,2,0"


def test_cpu_workers_are_not_pinned():
    with local_cluster(workers=2) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        seen = client.run(_env)
    assert len(seen) == 2
    assert all(v["CUDA_VISIBLE_DEVICES"] == os.environ.get("CUDA_VISIBLE_DEVICES") for v in seen.values())


def test_gpus_with_an_address_or_other_workers_is_refused(mixed_source, tmp_path, capsys):
    source, _ = mixed_source
    for extra in (["--dask-address", "tcp://127.0.0.1:1"], ["--workers", "3"]):
        assert main([str(source), str(tmp_path / "s.zarr"), "--gpus", "2", *extra]) == 2
        assert "--gpus" in capsys.readouterr().err


def test_the_flow_runs_on_gpu_pinned_workers(mixed_source, tmp_path):
    """The flow's own cluster with --gpus (decoding on the CPU here): every photo stored."""
    from flows.preprocess import run_in_process
    from pipeline.store.format import open_store

    source, _ = mixed_source
    result = run_in_process(source=str(source), store=str(tmp_path / "g.zarr"), gpus=2, decoder="cpu")
    assert result["n_images"] >= 14 and open_store(tmp_path / "g.zarr").attrs["complete"]


def listening(pids: set[int]) -> list[tuple[str, int]]:
    """The (address, port) pairs the processes `pids` listen on (TCP)."""
    import psutil

    found = []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        found += [(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return found


def tree_pids(pid: int) -> set[int]:
    import psutil

    try:
        me = psutil.Process(pid)
        return {pid} | {p.pid for p in me.children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def test_a_local_cluster_listens_on_loopback_only():
    """The scheduler serves /info over HTTP even without the dashboard: on 127.0.0.1, like every worker."""
    with local_cluster(workers=2) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        addresses = listening(tree_pids(os.getpid()))
    assert len(addresses) >= 5 and {ip for ip, _ in addresses} <= {"127.0.0.1", "::1"}, addresses


def test_a_flow_run_binds_nothing_beyond_loopback(mixed_source, tmp_path):
    """The whole command, its temporary Prefect server and its Dask cluster, sampled while it runs."""
    import subprocess
    import sys
    import time

    source, _ = mixed_source
    cmd = [sys.executable, "-m", "flows.preprocess", str(source), str(tmp_path / "s.zarr"), "--workers", "2"]
    proc = subprocess.Popen(cmd + ["--part-images", "5"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: set[tuple[str, int]] = set()
    while proc.poll() is None:
        seen |= set(listening(tree_pids(proc.pid)))
        time.sleep(0.2)
    assert proc.returncode == 0
    assert len(seen) >= 5 and {ip for ip, _ in seen} <= {"127.0.0.1", "::1"}, seen
