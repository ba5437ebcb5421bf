"""A local Prefect server (127.0.0.1, SQLite, its UI on) and a process serving the flow, started and stopped
together.

    python -m flows.server start [--port 4200] [--home runs/prefect]   # server in the foreground; prints the UI
    python -m flows.serve [--name default]                             # serve the deployment

`local_stack()` does both in the background for the README's main job and the tests, and stops both. It starts
`prefect server start` itself rather than `prefect server start --background`: the latter leaves the server's
output in pipes that nobody reads once the command returns, and at log level INFO the server died within 6 s
(measured; at the default level it lives until its first warning). `prefect server stop` only stops what
`--background` started, so the stop (SIGTERM to the process group, then SIGKILL) is ours too.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from pipeline.common.cli import ArgumentParser, Refused, command, make_dir, port

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(home: Path, port: int) -> dict[str, str]:
    """Environment of every process of the stack: its own PREFECT_HOME, SQLite file, API address."""
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "true",
            "DO_NOT_TRACK": "1",
        }
    )
    return env


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the Prefect server at {url} did not answer within {timeout:.0f} s")


def _stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def local_stack(home: Path, port: int | None = None, serve: bool = True, log_dir: Path | None = None):
    """Start a Prefect server (and `python -m flows.serve`); yield the environment to talk to them."""
    port = port or free_port()
    env = server_env(home, port)
    log_dir = Path(log_dir or home)
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        with open(log_dir / "server.log", "ab") as log:
            cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
            server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0)
        procs.append(server)
        wait_healthy(env["PREFECT_API_URL"], server)
        if serve:
            with open(log_dir / "serve.log", "ab") as log:
                cmd = [sys.executable, "-m", "flows.serve"]
                procs.append(
                    subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, process_group=0)
                )
        yield env
    finally:
        for proc in reversed(procs):
            _stop(proc)


def wait_deployment(env: dict, name: str, timeout: float = 120.0) -> None:
    """Wait until the serving process has registered deployment `name` (flow/deployment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run(
            [sys.executable, "-m", "prefect", "deployment", "inspect", name], env=env, capture_output=True, text=True
        )
        if r.returncode == 0:
            return
        time.sleep(1.0)
    raise TimeoutError(f"deployment {name} was not registered within {timeout:.0f} s")


def check_free(host: str, port: int) -> None:
    """Refused in one line when host:port is taken, before anything is written (Prefect would say so on
    stdout and exit 1)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: a closing port is free
        try:
            s.bind((host, port))
        except OSError as e:
            raise Refused(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


@command
def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m flows.server", description="a local Prefect server")
    p.add_argument("command", choices=("start",))
    p.add_argument("--port", type=port, default=4200)
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (docs/security.md before changing it)")
    p.add_argument("--home", default="runs/prefect", help="PREFECT_HOME: the SQLite database lives here")
    args = p.parse_args(argv)
    check_free(args.host, args.port)
    make_dir(args.home, "--home")
    env = server_env(Path(args.home), args.port)
    env["PREFECT_SERVER_API_HOST"] = args.host
    print(f"export PREFECT_API_URL={env['PREFECT_API_URL']} PREFECT_HOME={env['PREFECT_HOME']}", flush=True)
    print(f"Prefect UI: http://127.0.0.1:{args.port}", flush=True)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", args.host, "--port", str(args.port)]
    server = subprocess.Popen(cmd, env=env)
    stopped = threading.Event()  # a flag, not KeyboardInterrupt: the server may exit before the parent hears it
    previous = signal.signal(signal.SIGINT, lambda *_: stopped.set())
    try:
        while not stopped.is_set():
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(0.5)
                break
        if stopped.is_set():  # the server got the same Ctrl-C: let it shut down, then say so in one line
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    if stopped.is_set():
        print("flows.server: stopped", file=sys.stderr)
        return 130
    return server.returncode


if __name__ == "__main__":
    raise SystemExit(main())
