"""Set-up and entry commands: `python3 make.py main` (the main job) and `python3 make.py test` (the suite).

Both create or reuse a virtual environment at .venv in the repo root and install the project into it
(re-installing only when pyproject.toml or constraints.txt changed). Needs nothing but Python >= 3.11.
"""

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".installed"


def ensure_venv() -> None:
    if not PY.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in ("pyproject.toml", "constraints.txt")))
    want = digest.hexdigest()
    if STAMP.exists() and STAMP.read_text() == want:
        return
    print("installing the project and its dependencies into .venv", flush=True)
    run([PY, "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt", "-e", f"{ROOT}[dev]"])
    # FID's clean-fid declares torchvision, which the parts used here never import; where torch is the CPU build
    # the only torchvision at hand is a CUDA one that fails at import, so clean-fid comes without its declared deps
    # (the `fid` extra installs it with them, for machines whose torchvision matches their torch).
    run([PY, "-m", "pip", "install", "-q", "--no-deps", "-c", ROOT / "constraints.txt", "clean-fid==0.1.35"])
    STAMP.write_text(want)


def run(cmd) -> None:
    subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("main", "test"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    ensure_venv()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        if argv[0] == "main":
            run([PY, "-m", "flows.main"])
            run([PY, "-m", "training.run", "--resume"])  # train `full` there (a run made before: continued), evaluate
        else:
            run([PY, "-m", "ruff", "check", "."])
            run([PY, "-m", "ruff", "format", "--check", "."])
            run([PY, "-m", "pytest", "-n", "auto", "-q"])
    except subprocess.CalledProcessError as err:
        return err.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
