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
    from pipeline.store import open_store

    source, _ = mixed_source
    result = run_in_process(source=str(source), store=str(tmp_path / "g.zarr"), gpus=2, decoder="cpu")
    assert result["n_images"] >= 14 and open_store(tmp_path / "g.zarr").attrs["complete"]
