"""Settings are frozen dataclasses; command-line flags and the flow's parameters are derived from their fields.

A field's `metadata` may hold `help` (the flag's help) and `flag` (False: no flag of its own). Field types are
the annotations themselves (no `from __future__ import annotations` in the modules that declare settings).
"""

import argparse
import dataclasses
import inspect
import math
import types
import typing

from pipeline.common.cli import Refused, finite_float


def setting(default=dataclasses.MISSING, help: str = "", flag: bool = True, quiet: bool = False):
    """A dataclass field with the help of its flag; quiet: a refusal never repeats its value (it may hold a
    credential given by mistake)."""
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, "quiet": quiet})


def _scalar(tp) -> type:
    """int, float, str or bool: the type a flag parses to (the first such member of a union, else str)."""
    if tp in (int, float, str, bool):
        return tp
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        for arg in typing.get_args(tp):
            if arg in (int, float, str, bool):
                return arg
    return str


def add_flags(parser: argparse.ArgumentParser, settings, positional: tuple[str, ...] = ()) -> None:
    """One flag per field of the dataclass `settings` (`--part-images` for part_images), default None so that
    only what is given overrides; the names in `positional` become positional arguments."""
    for f in dataclasses.fields(settings):
        if not f.metadata.get("flag", True):
            continue
        kind, helptext = _scalar(f.type), f.metadata.get("help", "")
        if f.name in positional:
            parser.add_argument(f.name, type=kind, help=helptext)
        elif kind is bool:
            parser.add_argument("--" + f.name.replace("_", "-"), action=argparse.BooleanOptionalAction, help=helptext)
        elif typing.get_origin(f.type) is tuple:  # a repeatable flag
            parser.add_argument("--" + f.name.replace("_", "-"), action="append", metavar="VALUE", help=helptext)
        else:
            default = "" if f.default is dataclasses.MISSING else f" (default: {f.default})"
            parse = finite_float if kind is float else kind  # nan and inf are no setting's value
            parser.add_argument("--" + f.name.replace("_", "-"), type=parse, help=helptext + default)


def given(args: argparse.Namespace, settings) -> dict:
    """The fields of `settings` that the command line set."""
    names = {f.name for f in dataclasses.fields(settings)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def signature(*settings) -> inspect.Signature:
    """A keyword-only signature of the fields of the dataclasses `settings`, with their types and defaults."""
    params = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default,
            annotation=f.type,
        )
        for s in settings
        for f in dataclasses.fields(s)
    ]
    return inspect.Signature(params)


def _accepts(tp, value) -> bool:
    """Whether `value` (as JSON or YAML gives it) is of the field type `tp`: bool is no number, an int is a
    float, a list of str is a tuple[str, ...]."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return any(_accepts(arg, value) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if typing.get_origin(tp) is tuple:
        return isinstance(value, list | tuple) and all(_accepts(typing.get_args(tp)[0], v) for v in value)
    return isinstance(value, tp)


def check_values(settings, values: dict, where: str) -> None:
    """Refused naming the first setting of `values` that `settings` (a dataclass) does not have, or whose value
    is not of its field's type (a file's "16" is not the integer 16)."""
    fields = {f.name: f for f in dataclasses.fields(settings)}
    unknown = sorted(set(values) - set(fields), key=repr)
    if unknown:
        raise Refused(f"{where}: unknown settings {', '.join(map(repr, unknown))}"[:300])
    for name, value in values.items():
        if not _accepts(fields[name].type, value):
            want = getattr(fields[name].type, "__name__", str(fields[name].type))
            shown = "" if fields[name].metadata.get("quiet") else f"{value!r:.60} "
            raise Refused(f"{where}: {name} must be {want}, got {shown}({type(value).__name__})")


def parse_bytes(text: str | int) -> int:
    """Bytes of '10GB', '512MiB', '2e9' or an int."""
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return text
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20,
             "gib": 2**30, "tib": 2**40}  # fmt: skip
    t = str(text).strip().lower()
    number = t.rstrip("abgikmt")
    unit = t[len(number) :]
    if unit not in units:
        raise Refused(f"not a size: {text!r} (e.g. 10GB, 512MiB)")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise Refused(f"not a size: {text!r} (e.g. 10GB, 512MiB)") from None
    if not (value >= 0 and math.isfinite(value) and value < 2**63):
        raise Refused(f"not a size: {text!r} (a finite number of bytes)")
    return int(value)
