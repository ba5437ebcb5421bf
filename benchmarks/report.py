"""Shared helpers of the benchmarks: timing, machine description, report files.

Reports are committed and read on other machines: `write` names every path of the measuring machine in them as
`named` does, so that no report records where a benchmark happened to run."""

import functools
import json
import os
import platform
import re
import statistics
import time
from pathlib import Path
from urllib.parse import urlsplit


def timed(fn, *args) -> tuple[float, object]:
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def summary(seconds: list[float]) -> dict:
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "runs": len(seconds)}


def named(path) -> str | None:
    """A store or source as a report names it: relative to the repository when inside it, the shared ImageNet
    sample by what it is, anything else by its own name (never a path of the machine that measured)."""
    from benchmarks.photos import imagenet_sample

    if not path:
        return path
    if str(path).startswith("file://"):  # a folder of this machine too
        path = urlsplit(str(path)).path
    elif "://" in str(path):
        return str(path)
    p, root = Path(path).resolve(), Path(__file__).resolve().parents[1]
    if p.is_relative_to(root):
        return p.relative_to(root).as_posix()
    sample = imagenet_sample()
    if sample is not None and p == sample.resolve():
        return "the shared ImageNet sample (800 photos)"
    return p.name


@functools.cache
def _machine_path() -> re.Pattern:
    """An absolute path of this machine (or a file:// URL of one): a first component that is an entry of the
    file system's root, not preceded by what would make it part of a URL or a relative path."""
    tops = sorted(os.listdir("/"), key=len, reverse=True)
    top = "|".join(re.escape(t) for t in tops if t)
    return re.compile(rf"(?<![\w.:/~-])(?:file://)?/(?:{top})(?![^/\s'\"`|,;:.)\]}}>])[^\s'\"`|,;()\[\]{{}}<>]*")


def unpathed(text: str) -> str:
    """text with each path of this machine in it as `named` gives it (a sentence's final '.', ',' or ':' kept)."""

    def name(m: re.Match) -> str:
        path = m.group(0).rstrip(".,:")
        return named(path) + m.group(0)[len(path) :]

    return _machine_path().sub(name, text)


def _unpathed_data(x):
    if isinstance(x, str):
        return unpathed(x)
    if isinstance(x, dict):
        return {_unpathed_data(k): _unpathed_data(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_unpathed_data(v) for v in x]
    return x


def settings(args, keys: tuple[str, ...]) -> dict:
    """A benchmark's settings for its report, the stores among them `named`."""
    return {k: named(getattr(args, k)) if k.endswith("store") else getattr(args, k) for k in keys}


def machine() -> dict:
    """What the figures were measured on."""
    import llvmlite.binding as llvm
    import numba
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "llvm_cpu": llvm.get_host_cpu_name(),  # what Numba compiles for (e.g. znver3, znver4)
        "avx512": "+avx512f" in llvm.get_host_cpu_features().flatten(),
        "numba_threads": numba.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numba": numba.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def write(name: str, data: dict, markdown: str, out_dir: str | Path = "reports/benchmarks", show: bool = True) -> Path:
    """Write out_dir/name.json and name.md, every path of this machine in them `named`; with `show`, print the
    markdown and where it went."""
    data, markdown = _unpathed_data(data), unpathed(markdown)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)
    if show:
        print(markdown)
        print(f"written {out / name}.json and .md")
    return out / f"{name}.md"
