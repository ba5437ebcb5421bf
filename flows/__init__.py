"""Prefect flows: wiring only (the stages live in `pipeline/`).

Defaults for every process that imports a flow: no telemetry (these machines have no network), and a
temporary (ephemeral) Prefect server given enough time to start on a loaded 2-core machine.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "1")
