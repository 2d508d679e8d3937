"""A private Redis on a free port, Celery workers, web processes and Flower, as the Procfile runs them."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

from devstack.processes import BIN, ROOT, USERAPP, Process, free_port, wait_for


def db_url(url: str, db: int) -> str:
    """The same Redis server, another logical database (Celery events are per database)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


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
                     extra: list[str] | None = None, wait: bool = True) -> Process:
        """Start a Celery worker for `app` (a `celery -A` name; user modules in tests/userapp import).

        events=True: the project's way, `-E` and 4 processes (`concurrency` None), no mingle or gossip.
        events=False: exactly as the Celery tutorial starts one, `celery -A mytasks worker -l info`
        (plus `-P pool`, `-n name@%h` for a second worker, `--concurrency` when given): no -E, so
        the dashboard must turn events on itself. `queues` is `-Q`; `extra` is appended. With
        `wait` False it returns at once: `ready(proc)` waits for it (workers started together).
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
        self.worker = self.worker or proc
        return self.ready(proc) if wait else proc

    def ready(self, proc: Process) -> Process:
        """Wait (up to 60 s) for a worker `start_worker` started to say it is ready; raises
        RuntimeError with its output's end if it exited instead."""
        wait_for(lambda: "ready." in proc.output() or not proc.alive(), 60, what=f"celery {proc.name} ready")
        if not proc.alive():
            raise RuntimeError(f"celery {proc.name} exited: {proc.output()[-2000:]}")
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

    def start_flower(self, name: str = "flower", db: int = 0, port: int | None = None,
                     env: dict[str, str] | None = None) -> tuple[Process, str]:
        """Flower as the Procfile starts it (`python -m tasks.flower`: under /flower, one thread), on
        loopback, its API readable without a password there (as its docs allow on loopback), watching
        logical database `db`. Returns (process, base URL ending in /flower)."""
        port = port or free_port()
        proc_env = dict(self.env, REDIS_URL=db_url(self.redis_url, db), FLOWER_PORT=str(port),
                        FLOWER_ADDRESS="127.0.0.1", FLOWER_UNAUTHENTICATED_API="true", **(env or {}))
        proc = Process(name, [str(BIN / "python"), "-m", "tasks.flower"], proc_env, self.logdir)
        self.processes.append(proc)
        base = f"http://127.0.0.1:{port}/flower"
        wait_for(lambda: requests.get(f"{base}/healthcheck", timeout=2).status_code == 200, 60, what="flower")
        return proc, base

    @property
    def url(self) -> str:
        return self.webs[0][1]

    def stop(self) -> None:
        """Stop every process: the web processes, workers and Flowers all at once (each takes up to
        a second or two to end), then Redis, which they talk to until they have ended."""
        def signal_for(proc: Process) -> int:
            return signal.SIGQUIT if proc in self.workers or proc.name.startswith("worker") else signal.SIGTERM

        others = [proc for proc in reversed(self.processes) if proc is not self.redis]
        try:
            for proc in others:
                proc.begin_stop(signal_for(proc))
        finally:
            for proc in [*others, self.redis]:
                if proc is None:
                    continue
                try:
                    proc.stop(signal_for(proc))
                except Exception as exc:  # noqa: BLE001 - one that will not stop must not keep the rest running
                    print(f"stack: {proc.name} did not stop cleanly: {exc!r}")
            shutil.rmtree(self.dir, ignore_errors=True)


def users_cli(stack: Stack, *args: str, stdin: str | None = None) -> str:
    """web/cli.py as an operator runs it, `flask --app web users ...`, against the stack's Redis;
    its output. Asserts it succeeded."""
    result = subprocess.run([str(BIN / "flask"), "--app", "web", "users", *args], cwd=ROOT, env=stack.env,
                            input=stdin, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def add_users(stack: Stack, users: dict[str, str], password: str, tokens: bool = False) -> dict[str, str]:
    """Accounts for `users` (name -> role) with `password`, made in this process by
    web.users.UserStore, the code `flask --app web users add` and `users token` run, against the
    stack's Redis (its REDIS_URL, as users_cli); with `tokens`, a new API token for each:
    {name: token}, else {}. Raises ValueError as the CLI's `add` refuses (a bad name, role or
    short password).

    For setting up accounts, not for testing the CLI (users_cli does that: tests/integration/
    test_access.py, test_heroku.py): a CLI process imports and creates the web app first, 2.6 s of
    CPU here, and the fixtures ran 8 of them at once on 2 cores (92 s of one fixture's setup in a
    loaded `make test`)."""
    import redis

    from web.users import UserStore

    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        store = UserStore(client)
        made = {}
        for name, role in users.items():
            store.add(name, password, role)
            made[name] = store.new_token(name) if tokens else ""
    finally:
        client.close()
    return made if tokens else {}


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
