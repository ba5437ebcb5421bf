"""The contract every console script keeps: input it cannot take is refused with one line on stderr and exit
code 2, before anything is written; Ctrl-C ends it with one line and exit code 130.

A command's `main(argv)` is wrapped by `command`, parses with `ArgumentParser` (whose errors are one line), and
raises `Refused` for input it cannot take, `Unusable` (such as `StoreError`) for data that is there but cannot be
used as it is, or an OSError for a file or an object store it cannot reach; each is one line and exit code 2.
Anything else, a plain ValueError included, is a bug and ends with its traceback. COLORIZE_TRACEBACK=1 shows the
traceback of a refusal too, for a developer chasing one.
"""

import argparse
import functools
import math
import os
import sys
from pathlib import Path


class Refused(ValueError):
    """Input a command cannot take; its message is the one line the user reads.

    A ValueError only so that library callers that catch ValueError around a check of their arguments still do."""


class Unusable(Exception):
    """Data that is there but cannot be used as it is (a damaged store, a checkpoint that does not load); its
    message is the one line the user reads."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is what --help is for)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def one_line(error: BaseException | str) -> str:
    """The message of an error on one line; an OSError as 'path: reason', as the shell says it."""
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename is not None else ""
        return f"{where}{error.strerror}"
    text = " ".join(str(error).split())
    return text or type(error).__name__


def command(main):
    """Wrap a console script's main(argv) -> int in the contract above."""

    @functools.wraps(main)
    def run(argv=None) -> int:
        prog = Path(sys.argv[0]).name if argv is None else main.__module__
        try:
            return main(argv)
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return 130
        except (Refused, Unusable, OSError) as e:
            if os.environ.get("COLORIZE_TRACEBACK"):
                raise
            print(f"error: {one_line(e)}", file=sys.stderr)
            return 2

    return run


def number(parse, low: float | None = None, high: float | None = None, name: str = "number"):
    """An argparse type: `parse` (int or float) of the text, finite and within [low, high]."""

    def check(text: str):
        value = parse(text)
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
            bounds = f" from {low} to {high}" if high is not None else f" >= {low}" if low is not None else ""
            raise argparse.ArgumentTypeError(f"must be a finite {name}{bounds}, got {text}")
        return value

    check.__name__ = name  # argparse names the type in its own message for text that does not parse
    return check


positive_int = number(int, 1, name="whole number")
non_negative_int = number(int, 0, name="whole number")
finite_float = number(float, name="number")
non_negative_float = number(float, 0, name="number")
port = number(int, 0, 65535, name="port")


def make_dir(path: str | Path, what: str = "--out", keep: bool = True) -> Path:
    """Create an output folder (and its parents), or refuse in one line; the folders a refused call created are
    removed again, so that a refused command leaves nothing behind. keep=False only checks that it could be made
    (a command that writes at its end checks first, then computes)."""
    if "://" in str(path):  # never taken for a relative folder named "s3:"
        raise Refused(f"{what} {path}: a URL; this command writes to a local folder")
    path = Path(path)
    real = Path(os.path.realpath(path))  # where it lands: "new/../x" makes x, never new
    if real != path.absolute():
        make_dir(real, what, keep)
        return path
    created, probe = [], path
    while not probe.exists() and probe.parent != probe:
        created.append(probe)
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise Refused(f"{what} {path}: {probe} is a file, not a folder")
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise Refused(f"{what} {path}: not writable")
    except (OSError, Refused) as e:
        for folder in created:  # the deepest first
            if folder.is_dir():
                folder.rmdir()
        raise e if isinstance(e, Refused) else Refused(f"{what} {path}: {one_line(e)}") from None
    if not keep:
        for folder in created:
            folder.rmdir()
    return path
