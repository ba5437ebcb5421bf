"""The main job on the embedded default, end to end: `python -m flows.main` (what `make.py main` runs).

1. writes the embedded default photo tree (real JPEGs from scikit-image's photographs) to data/embedded;
2. starts a local Prefect server (127.0.0.1, SQLite under runs/prefect) and `python -m flows.serve`;
3. runs the deployment `preprocess-imagenet/default` for the train and val splits with
   `prefect deployment run ... --watch`, into data/stores/embedded-{train,val}.zarr;
4. the flow runs the data-quality check on both stores (reports/quality/, and the `data-quality` artifact);
5. stops the server and the serving process.
"""

import subprocess
import sys
from pathlib import Path

from flows.server import ROOT, local_stack, wait_deployment
from pipeline.common.cli import ArgumentParser, command, make_dir
from pipeline.embedded import build_embedded_dataset

DEPLOYMENT = "preprocess-imagenet/default"


def run_deployment(env: dict, params: dict) -> int:
    cmd = [sys.executable, "-m", "prefect", "deployment", "run", DEPLOYMENT, "--watch"]
    for k, v in params.items():
        cmd += ["-p", f"{k}={v}"]
    print("$", " ".join(cmd[2:]), flush=True)
    return subprocess.run(cmd, env=env, cwd=ROOT).returncode


def _built_otherwise(source: Path, split: str, store: Path) -> bool:
    """Whether the embedded default's store was built with other settings (an earlier version's): it is derived
    data of this job, so the job rebuilds it, and says so."""
    from pipeline.build import resolve
    from pipeline.config import PreprocessConfig
    from pipeline.store.format import StoreError
    from pipeline.store.lifecycle import check_target

    try:
        check_target(store, resolve(PreprocessConfig(source=str(source), split=split))[0])
    except StoreError as e:
        if "other settings" not in str(e):
            raise
        print(f"rebuilding {store}: built with other settings", flush=True)
        return True
    return False


@command
def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m flows.main", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT / "data"), help="where the photo tree and the stores go")
    p.add_argument("--runs", default=str(ROOT / "runs"), help="Prefect home and logs")
    p.add_argument("--overwrite", action="store_true", help="rebuild the stores")
    p.add_argument("--zhang-prior", help="Zhang et al.'s prior_probs.npy, for the quality check's KL")
    args = p.parse_args(argv)
    data, runs = make_dir(args.data, "--data"), make_dir(args.runs, "--runs")
    source = build_embedded_dataset(data / "embedded")
    stores = {split: data / "stores" / f"embedded-{split}.zarr" for split in ("train", "val")}
    with local_stack(runs / "prefect") as env:
        wait_deployment(env, DEPLOYMENT)
        print(f"Prefect UI: {env['PREFECT_API_URL'].removesuffix('/api')}", flush=True)
        for split, store in stores.items():
            overwrite = args.overwrite or _built_otherwise(source, split, store)
            params = {"source": source, "store": store, "split": split, "overwrite": str(overwrite).lower()}
            params |= {"quality_out": ROOT / "reports" / "quality"}
            params |= {"zhang_prior": args.zhang_prior} if args.zhang_prior else {}
            rc = run_deployment(env, params)
            if rc:
                print(f"error: the {split} flow run failed (exit {rc}); logs in {args.runs}/prefect", file=sys.stderr)
                return rc
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
