"""Starts the real parts for integration, end-to-end and benchmark runs: Redis, a worker, the web."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Users' Celery apps (`mytasks`, the Celery tutorial's module): importable by every process started here.
USERAPP = ROOT / "tests" / "userapp"


# Debian's Chromium and the flags it runs with here (DESIGN.md): browser tests, benchmarks, screenshots.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], object], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> object:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - polling until it works
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what or check!r}: {last_error!r}")


class Process:
    """A child process with its output in a log file; stopped by its own pid."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        # A restart under the same name appends to the same log: read only this process's lines.
        self.offset = self.log.tell()
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        self.log.close()


class Stack:
    """A private Redis on a free port, a Celery worker and one or more web processes."""

    def __init__(self, logdir: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dashboard-stack-"))
        self.logdir = logdir or self.dir
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        pythonpath = os.pathsep.join(p for p in (str(USERAPP), os.environ.get("PYTHONPATH", "")) if p)
        self.env = {**os.environ, "REDIS_URL": self.redis_url, "PYTHONUNBUFFERED": "1", "PYTHONPATH": pythonpath,
                    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
        self.processes: list[Process] = []
        self.workers: list[Process] = []
        self.redis: Process | None = None
        self.worker: Process | None = None
        self.webs: list[tuple[Process, str]] = []

    def start_redis(self) -> Process:
        self.redis = Process("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
                             self.env, self.logdir)
        self.processes.append(self.redis)
        import redis

        client = redis.Redis(port=self.redis_port)
        wait_for(client.ping, 10, what="redis-server")
        return self.redis

    def stop_redis(self) -> None:
        """Shut Redis down the way an operator would, saving its data for the restart."""
        import redis

        try:
            redis.Redis(port=self.redis_port).shutdown(save=True)
        except redis.ConnectionError:
            pass  # it closes the connection as it goes
        assert self.redis is not None
        self.redis.proc.wait(10)
        self.redis.stop()

    def web(self, url: str) -> Process:
        return next(proc for proc, web_url in self.webs if web_url == url)

    def kill_web(self, url: str, sig: int = signal.SIGKILL) -> None:
        proc = self.web(url)
        proc.stop(sig)
        self.webs = [(p, u) for p, u in self.webs if u != url]

    def start_worker(self, concurrency: int | None = None, name: str = "worker", app: str = "tasks.celery_app",
                     pool: str = "prefork", queues: str | None = None, events: bool = True,
                     extra: list[str] | None = None) -> Process:
        """Start a Celery worker for `app` (a `celery -A` name; user modules in tests/userapp import).

        events=True: the project's way, `-E` and 4 processes (`concurrency` None), no mingle or gossip.
        events=False: exactly as the Celery tutorial starts one, `celery -A mytasks worker -l info`
        (plus `-P pool`, `-n name@%h` for a second worker, `--concurrency` when given): no -E, so
        the dashboard must turn events on itself. `queues` is `-Q`; `extra` is appended.
        """
        args = [str(BIN / "celery"), "-A", app, "worker"]
        if events:
            args += ["--loglevel=INFO", f"--concurrency={concurrency or 4}", "-n", f"{name}@%h",
                     "--without-mingle", "--without-gossip", "-E"]
        else:
            args += ["-l", "info"]
            if concurrency is not None:
                args.append(f"--concurrency={concurrency}")
            if name != "worker":
                args += ["-n", f"{name}@%h"]
        if pool != "prefork":
            args += ["-P", pool]
        if queues:
            args += ["-Q", queues]
        proc = Process(name, [*args, *(extra or [])], self.env, self.logdir)
        self.processes.append(proc)
        self.workers.append(proc)
        wait_for(lambda: "ready." in proc.output() or not proc.alive(), 60, what=f"celery {name} ready")
        if not proc.alive():
            raise RuntimeError(f"celery {name} exited: {proc.output()[-2000:]}")
        self.worker = self.worker or proc
        return proc

    def python(self, code: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `code` in another Python process with the stack's environment ("another Python shell"
        that calls `.delay()`): its output is in the result; with `check`, a failure raises with it."""
        result = subprocess.run([str(BIN / "python"), "-c", code], cwd=ROOT, env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"python snippet failed ({result.returncode}): {result.stdout}{result.stderr}")
        return result

    def start_web(self, port: int | None = None, env: dict[str, str] | None = None) -> str:
        port = port or free_port()
        proc_env = dict(self.env, PORT=str(port), HOST="127.0.0.1", **(env or {}))
        proc = Process(f"web-{port}", [str(BIN / "python"), "serve.py"], proc_env, self.logdir)
        self.processes.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(f"{url}/healthz", timeout=2).status_code == 200, 30, what="web /healthz")
        wait_for(lambda: "listening for Celery events" in proc.output(), 30, what="web listener")
        self.webs.append((proc, url))
        return url

    @property
    def url(self) -> str:
        return self.webs[0][1]

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop(signal.SIGQUIT if proc in self.workers or proc.name.startswith("worker") else signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)


def users_cli(stack: Stack, *args: str, stdin: str | None = None) -> str:
    """web/cli.py as an operator runs it, `flask --app web users ...`, against the stack's Redis;
    its output. Asserts it succeeded."""
    result = subprocess.run([str(BIN / "flask"), "--app", "web", "users", *args], cwd=ROOT, env=stack.env,
                            input=stdin, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def sign_in(url: str, name: str, password: str) -> requests.Session:
    """A browser-like session signed in through the sign-in form (its CSRF token, same Origin)."""
    http = requests.Session()
    page = http.get(f"{url}/login", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, page.text
    answer = http.post(f"{url}/login", data={"username": name, "password": password, "csrf_token": token[1]},
                       headers={"Origin": url}, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    return http
