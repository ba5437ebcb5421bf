"""Benchmarks: `python -m benchmarks NAME [options]`; each writes reports/benchmarks/NAME.{json,md}."""

import importlib
import sys

from pipeline.common.cli import ArgumentParser, command

BENCHMARKS = {
    "categories": "benchmarks.categories",
    "codecs": "benchmarks.codecs",
    "loader": "benchmarks.loader",
    "preprocess": "benchmarks.flow",
    "quality": "benchmarks.systems",
    "scale": "benchmarks.scale",
    "train": "benchmarks.train",
}


@command
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = ArgumentParser(prog="colorize-bench", description=__doc__)
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    if not argv or argv[0].startswith("-"):  # no benchmark named: this parser's help or its error
        parser.parse_args(argv)
    args = parser.parse_args(argv[:1])  # the benchmark's own flags, --help included, are its own
    return importlib.import_module(BENCHMARKS[args.name]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
