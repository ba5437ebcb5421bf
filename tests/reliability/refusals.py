"""How the bucket tests (test_shared_buckets.py, test_bucket_trainings.py) run a command and read its refusal:
the one line a refused command prints, whether it returned or exited through argparse."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def one_line(capsys) -> str:
    out, err = capsys.readouterr()
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]  # no tqdm
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def cli(main, argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse
        return e.code
