"""The flow as a served deployment of a real local Prefect server: its artifacts through the API, its run in the
UI as a browser shows it (headless Chromium from Debian's packages, which .ci/run installs)."""

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from flows.main import DEPLOYMENT, run_deployment
from flows.server import local_stack, wait_deployment
from pipeline.store.format import staging_dir
from pipeline.store.staging import PARTS_DIR

pytestmark = [pytest.mark.slow, pytest.mark.dali]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def api(env: dict, path: str, body: dict | None = None) -> list | dict:
    request = urllib.request.Request(f"{env['PREFECT_API_URL']}/{path}", json.dumps(body or {}).encode(),
                                     {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def hide_until_retried(env: dict, path: Path, timeout: float = 120.0) -> threading.Thread:
    """A transient file-system failure: move `path` away as soon as it appears and put it back once the API shows
    a task run awaiting its retry."""

    def retrying() -> bool:
        runs = api(env, "task_runs/filter")
        return any(t["name"].startswith("stage-part") and t["state_name"] == "AwaitingRetry" for t in runs)

    def hide():
        deadline = time.monotonic() + timeout
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        path.rename(path.with_suffix(".away"))
        try:
            while not retrying() and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            path.with_suffix(".away").rename(path)

    thread = threading.Thread(target=hide, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def served(mixed_source, tmp_path_factory):
    source, _ = mixed_source
    tmp = tmp_path_factory.mktemp("served")
    with local_stack(tmp / "prefect") as env:
        wait_deployment(env, DEPLOYMENT)
        params = {"source": source, "store": tmp / "s.zarr", "part_images": 5, "shard_images": 4, "workers": 2}
        hider = hide_until_retried(env, staging_dir(tmp / "s.zarr") / PARTS_DIR / "000000.json")  # part 0's source list
        assert run_deployment(env, params | {"quality_out": tmp}) == 0
        hider.join()
        yield env, tmp


def test_the_run_publishes_progress_summary_and_quality(served):
    env, tmp = served
    artifacts = {a["key"]: a for a in api(env, "artifacts/filter") if a.get("key")}
    assert {"preprocess-progress", "preprocess-summary", "data-quality"} <= set(artifacts)
    assert float(artifacts["preprocess-progress"]["data"]) == 100.0
    assert "images stored" in artifacts["preprocess-summary"]["data"]
    table = json.loads(artifacts["data-quality"]["data"])
    assert (
        table and all(row["result"] == "ok" for row in table) and artifacts["data-quality"]["description"][:4] == "PASS"
    )
    (run,) = api(env, "flow_runs/filter")
    assert run["state_type"] == "COMPLETED" and all(a["flow_run_id"] == run["id"] for a in artifacts.values())
    tasks = api(env, "task_runs/filter")
    assert {"stage-part", "quality-check"} <= {t["name"].rsplit("-", 1)[0] for t in tasks}
    assert (tmp / "s.zarr.quality.json").is_file()


def test_a_part_that_fails_transiently_is_retried(served):
    env, _ = served
    parts = [t for t in api(env, "task_runs/filter") if t["name"].startswith("stage-part")]
    assert parts and all(t["state_type"] == "COMPLETED" for t in parts)
    assert sorted(t["run_count"] for t in parts)[-1] == 2  # part 0 failed once (its list was away), then succeeded


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian's chromium package; .ci/run installs it)")
def test_the_ui_shows_the_flow_run(served):
    env, _ = served
    (run,) = api(env, "flow_runs/filter")
    url = env["PREFECT_API_URL"].removesuffix("/api") + f"/runs/flow-run/{run['id']}"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
    for budget in (15000, 45000):  # the page renders from the API after it loads
        dom = subprocess.run([CHROMIUM, *flags, f"--user-data-dir={env['PREFECT_HOME']}/chromium",
                              f"--virtual-time-budget={budget}", "--dump-dom", url],
                             capture_output=True, text=True, timeout=180).stdout  # fmt: skip
        if run["name"] in dom:
            break
    assert run["name"] in dom and DEPLOYMENT.split("/")[0] in dom
