"""The `colorize-preprocess` console script: checks for the pipeline extra before importing Prefect."""

import sys


def preprocess() -> int:
    from pipeline.common.extras import MissingExtra, require

    try:
        require("pipeline", "colorize-preprocess")
    except MissingExtra as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from flows.preprocess import main

    return main()
