"""Prefect and Dask wiring only: the stages live in `pipeline/`. `preprocess` is the flow, `serve` serves it as a
deployment, `server` starts a local Prefect server, `cluster` the Dask cluster, `artifacts` what a run shows in
Prefect's UI, `main` the main job on the embedded default, `cli` the console script."""
