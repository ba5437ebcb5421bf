"""Serve the flow as the deployment `preprocess-imagenet/<name>` of the Prefect server at PREFECT_API_URL.

    python -m flows.serve [--name default]

then, from any shell with the same PREFECT_API_URL:

    prefect deployment run 'preprocess-imagenet/default' -p source=DIR -p store=DIR --watch
"""

from prefect.settings import PREFECT_RUNNER_POLL_FREQUENCY, temporary_settings

from flows.preprocess import preprocess_imagenet
from pipeline.common.cli import ArgumentParser, command


@command
def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--name", default="default", help="deployment name")
    p.add_argument("--limit", type=int, default=1, help="flow runs executed at once by this process")
    args = p.parse_args(argv)
    with temporary_settings(updates={PREFECT_RUNNER_POLL_FREQUENCY: 1}):  # a run starts within a second
        preprocess_imagenet.serve(name=args.name, limit=args.limit, print_starting_message=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
