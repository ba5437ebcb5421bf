"""Benchmarks: `python -m benchmarks NAME [options]`; each writes reports/benchmarks/NAME.{json,md}."""

import importlib
import sys

from pipeline.cli import ArgumentParser, command

BENCHMARKS = {
    "categories": "benchmarks.categories",
    "codecs": "benchmarks.codecs",
    "loader": "benchmarks.loader",
    "preprocess": "benchmarks.preprocess",
    "quality": "benchmarks.quality",
    "scale": "benchmarks.scale",
    "train": "benchmarks.train",
}


@command
def main(argv=None) -> int:
    parser = ArgumentParser(prog="colorize-bench", description=__doc__)
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    args, rest = parser.parse_known_args(argv)
    module = importlib.import_module(BENCHMARKS[args.name])
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
