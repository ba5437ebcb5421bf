"""What a flow run shows in Prefect's UI: its progress as parts finish, a summary of the run, and the
data-quality check's table (the check runs as a task of the flow)."""

from pathlib import Path

from prefect import task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE


class Progress:
    """The `preprocess-progress` artifact: created at the first staged part, updated at every one after."""

    def __init__(self, store: str):
        self.store, self.id = store, None

    def __call__(self, done: int, total: int) -> None:
        pct = 100.0 * done / total
        if self.id is None:
            self.id = create_progress_artifact(
                pct, key="preprocess-progress", description=f"parts staged: {self.store}"
            )
        else:
            update_progress_artifact(self.id, pct)


def publish_summary(result: dict) -> None:
    """The `preprocess-summary` artifact: sources by outcome (skips by kind), images/s, where the store is."""
    counts = result.get("counts", {})
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    rate = result["n_images"] / result["seconds"] if result.get("seconds") else 0.0
    lines = [
        f"# {result['store']}",
        "",
        f"{result['state']}: {result.get('n_images', 0)} images stored from {sum(counts.values())} sources "
        f"({result.get('layout', '')} layout) in {result.get('seconds', 0):.1f} s, {rate:.0f} images/s.",
        "",
        "| outcome | sources |",
        "|---|---|",
        rows,
    ]
    create_markdown_artifact("\n".join(lines), key="preprocess-summary", description="the run's outcome")


@task(name="quality-check", cache_policy=NO_CACHE)
def quality_check(store: str, out: str, zhang_prior: str | None = None, storage_option=()) -> dict:
    """`pipeline.check` on the finished store: its files in `out`, its checks as the `data-quality` table."""
    import json

    from pipeline import check

    argv = [store, "--out", out] + (["--zhang-prior", zhang_prior] if zhang_prior else [])
    argv += [f"--storage-option={kv}" for kv in storage_option]
    code = check.main(argv)
    report = json.loads((Path(out) / f"{Path(store).name}.quality.json").read_text())
    table = [
        {"check": c["check"], "result": "ok" if c["ok"] else "FAILED", "detail": c["detail"]} for c in report["checks"]
    ]
    verdict = "PASS" if code == 0 else "FAIL"
    create_table_artifact(table, key="data-quality", description=f"{verdict}: {store} ({report.get('layout')} layout)")
    return {"quality": verdict, "failed": [c["check"] for c in report["checks"] if not c["ok"]]}
