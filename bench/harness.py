"""What the load benchmark's steps share: the run (its stack, budget, folders, steps), samplers of a
process's CPU and memory, probes of a listener's event count, the baselines' processes, py-spy."""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from bench.common import RESULTS, SYNTHETIC, cpu_seconds, machine_busy_seconds, memory_mb, runqueue_wait_seconds
from devstack import BIN, ROOT, Process, Stack, free_port, wait_for
from devstack.stack import db_url

PYTHON = str(BIN / "python")


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


class CpuSampler:
    """Samples a process's CPU time, run-queue wait and RSS every `interval` s (pid None: the whole
    machine's busy time), to read any window afterwards. A context manager."""

    def __init__(self, pid: int | None, interval: float = 0.1) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float, float]] = []  # wall time, CPU s, wait s (machine: total s)
        self.peak_rss = 0.0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                if self.pid is None:
                    self.samples.append((time.time(), *machine_busy_seconds()))
                else:
                    self.samples.append((time.time(), cpu_seconds(self.pid), runqueue_wait_seconds(self.pid)))
                    self.peak_rss = max(self.peak_rss, memory_mb(self.pid).get("rss", 0.0))
            except OSError:
                return
            self.stopped.wait(self.interval)

    def __enter__(self) -> CpuSampler:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stopped.set()
        self.thread.join(2)

    def window(self, start: float, end: float) -> dict[str, float] | None:
        """Between two wall-clock times (nearest samples): {"cpu_s", "wall_s", "percent_of_core",
        "peak_percent_of_core", "waiting_for_cpu_percent"} (machine: {"wall_s",
        "busy_percent_of_all_cores"}); None if unknown."""
        if len(self.samples) < 2 or end <= start:
            return None
        first = min(self.samples, key=lambda s: abs(s[0] - start))
        last = min(self.samples, key=lambda s: abs(s[0] - end))
        wall = last[0] - first[0]
        if wall <= 0:
            return None
        if self.pid is None:
            busy, total = last[1] - first[1], last[2] - first[2]
            return {"wall_s": round(wall, 2), "busy_percent_of_all_cores": round(100 * busy / total, 1)
                    if total else None}
        inside = [s for s in self.samples if first[0] <= s[0] <= last[0]]
        peaks = [100 * (b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(inside, inside[1:], strict=False) if b[0] > a[0]]
        return {"cpu_s": round(last[1] - first[1], 2), "wall_s": round(wall, 2),
                "percent_of_core": round(100 * (last[1] - first[1]) / wall, 1),
                # the busiest sampling interval (about 0.1 s): an average hides saturated moments
                "peak_percent_of_core": round(max(peaks), 1) if peaks else None,
                "waiting_for_cpu_percent": round(100 * (last[2] - first[2]) / wall, 1)}


class LineReader:
    """Reads a child's stdout lines in a thread, keeping the JSON ones."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(proc,), daemon=True)
        self.thread.start()

    def _run(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            line = line.strip()
            if line.startswith("{"):
                try:
                    self.lines.put(json.loads(line))
                except json.JSONDecodeError:
                    pass

    def get(self, key: str, timeout: float) -> dict[str, Any] | None:
        """The next JSON line holding `key`, or None after `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, min(0.5, deadline - time.monotonic())))
            except queue.Empty:
                continue
            if key in line:
                return line
        return None


def stop_child(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """End a child this benchmark started, by its own pid."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ---- what a listener has taken in --------------------------------------------------------------

def healthz(url: str, timeout: float = 5.0, token: str | None = None) -> dict[str, Any]:
    """GET /healthz; with `token`, as a signed-in caller (with sign-in on, only such a caller gets
    the details: the listener's counters, the workers)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{url}/healthz", timeout=timeout, headers=headers).json()


def listener_events(url: str, token: str | None = None) -> int:
    """Events our listener (or a baseline's) has decoded: counted before any merge or store."""
    return int(healthz(url, token=token)["listener"]["events"])


def flower_events(url: str, worker: str = SYNTHETIC, kind: str | None = None) -> int:
    """Task events Flower has applied for one worker: its Prometheus counter `flower_events_total`,
    which flower.events.EventsState.event increments after Celery's State.event and its search
    index have taken the event in (Flower 2.2), i.e. fully applied."""
    text = requests.get(f"{url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("flower_events_total{") and f'worker="{worker}"' in line:
            if kind is None or f'type="{kind}"' in line:
                total += float(line.rsplit(" ", 1)[1])
    return int(total)


def send_probe(hostname: str = "bench@probe", url: str | None = None, kind: str = "worker-heartbeat") -> None:
    """One worker event (on the broker, or `url`), to see that a listener is subscribed."""
    from tasks.celery_app import celery_app

    with celery_app.connection_for_write(url) as connection:
        dispatcher = celery_app.events.Dispatcher(connection, hostname=hostname)
        dispatcher.send(kind, freq=2.0, active=0, processed=0, loadavg=[0.0, 0.0, 0.0],
                        sw_ident="bench", sw_ver="0", sw_sys="Linux")
        dispatcher.close()


def flower_knows_probe(url: str) -> bool:
    """Flower counts only task events; a worker event shows up as that worker's online gauge."""
    text = requests.get(f"{url}/metrics", timeout=5).text
    return 'flower_worker_online{worker="bench@probe"}' in text


def wait_subscribed(check: Callable[[], bool], timeout: float = 30.0, what: str = "listener",
                    url: str | None = None) -> None:
    """Send probe events until `check` says the listener got one."""

    def seen() -> bool:
        send_probe(url=url)
        time.sleep(0.2)
        return check()

    wait_for(seen, timeout, 0.3, what=f"{what} subscribed")
    # The probe's worker leaves as a worker does: a worker that went silent would be asked whether
    # it is alive (a broadcast waiting a second for replies) for as long as the run lasts.
    send_probe(url=url, kind="worker-offline")


class Profile:
    """py-spy sampling a process for a while (--profile), summarised by function."""

    def __init__(self, pid: int, seconds: float, name: str, folder: Path = RESULTS) -> None:
        self.name = name
        self.path = folder / f"profile-{name}.txt"
        self.proc = subprocess.Popen(
            [str(BIN / "py-spy"), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
             "--rate", "100", "--format", "raw", "--output", str(self.path), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def summary(self, top: int = 15) -> dict[str, Any]:
        """{"file", "samples", "self_percent": [(frame, %)], "inclusive_percent": [(frame, %)]}."""
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            stop_child(self.proc)
        if not self.path.exists():
            return {"error": "py-spy wrote nothing"}
        own: dict[str, int] = {}
        inclusive: dict[str, int] = {}
        total = 0
        for line in self.path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
            if frames:
                own[frames[-1]] = own.get(frames[-1], 0) + n
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + n

        def ranked(counts: dict[str, int]) -> list[tuple[str, float]]:
            best = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
            return [(frame, round(100 * n / total, 1)) for frame, n in best]

        return {"file": self.path.name, "samples": total, "self_percent": ranked(own),
                "inclusive_percent": ranked(inclusive)}


def code_version() -> str:
    """The commit measured, and whether the product's files had uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "web", "tasks", "celery_dashboard", "serve.py",
                                "static"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' with uncommitted changes in the product' if dirty else ''}"


# ---- the run -----------------------------------------------------------------------------------

class Run:
    """One benchmark run: its profile's sizes, time budget, folders, the stack (Redis, a Celery worker,
    our web process), the baselines and Flower it starts, and each step's result or error."""

    def __init__(self, name: str, profile: dict[str, Any]) -> None:
        self.name = name
        self.p = profile
        self.started = time.monotonic()
        self.results: dict[str, Any] = {"profile": name}
        self.errors: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        # The quick mode writes beside the full report, never over it.
        self.out = RESULTS if name == "full" else RESULTS / name
        self.work = self.out / "work"
        self.logdir = self.out / "logs"
        for folder in (self.work, self.logdir):  # this run's files only
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        # History for every step's tasks; sockets for the largest fan-out (its default is 10,000 anyway).
        # QUERY_SCAN_LIMIT stays the default (the memory step times a page of the list as users get
        # it); the ingest step raises it for its own read-back (bench.ingest.READ_BACK).
        self.stack = Stack(logdir=self.logdir, env={"HISTORY_LIMIT": "200000", "MAX_CONNECTIONS": "5000"})
        self.extra: list[Process] = []
        self.profile = False  # --profile: py-spy on the web process during the heaviest loads
        self.profiles: dict[str, Any] = {}

    def remaining(self) -> float:
        return self.p["budget_s"] - (time.monotonic() - self.started)

    def step(self, name: str, fn: Callable[[Run], Any]) -> None:
        """Run one measurement; an exception is recorded (logs/error-<name>.txt) and the next goes on."""
        log(f"step {name} ({self.remaining():.0f} s of budget left)")
        start = time.monotonic()
        # What else the machine was doing: the load average as the step starts (our own processes are
        # idle then), and how busy all cores were during it (ours and everyone else's).
        load = self.results.setdefault("machine_load", {})
        load[name] = {"loadavg_1m_at_start": round(os.getloadavg()[0], 2)}
        machine = CpuSampler(None, interval=0.5).__enter__()
        try:
            self.results[name] = fn(self)
        except Exception as exc:  # noqa: BLE001 - one broken step must not lose the others
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            (self.logdir / f"error-{name}.txt").write_text(traceback.format_exc())
            log(f"step {name} failed: {exc!r}")
        finally:
            machine.__exit__()
        window = machine.window(machine.samples[0][0], machine.samples[-1][0]) if machine.samples else None
        load[name]["busy_percent_of_all_cores"] = (window or {}).get("busy_percent_of_all_cores")
        self.timings[name] = round(time.monotonic() - start, 1)
        log(f"step {name} done in {self.timings[name]} s")

    # -- processes --------------------------------------------------------------------------------

    @property
    def web_url(self) -> str:
        return self.stack.url

    @property
    def web_pid(self) -> int:
        return self.stack.web(self.web_url).pid

    def start(self) -> None:
        self.stack.start_redis()
        os.environ["REDIS_URL"] = self.stack.redis_url  # before anything imports tasks.*
        self.stack.start_worker()
        self.stack.start_web()
        base = listener_events(self.web_url)
        wait_subscribed(lambda: listener_events(self.web_url) > base, 30, "web listener")

    def stop_web(self) -> None:
        """Our web process stopped (SIGTERM), until `start_web`."""
        import signal

        self.stack.kill_web(self.web_url, signal.SIGTERM)

    def start_web(self, env: dict[str, str] | None = None, token: str | None = None) -> None:
        """Our web process started (with `env` over the stack's), its listener subscribed (asked with
        `token` where `env` turns sign-in on)."""
        self.stack.start_web(env=env)
        base = listener_events(self.web_url, token)
        wait_subscribed(lambda: listener_events(self.web_url, token) > base, 30, "web listener")

    def restart_web(self, env: dict[str, str] | None = None, token: str | None = None) -> None:
        """Our web process again, fresh (and with `env` over the stack's), its listener subscribed."""
        self.stop_web()
        self.start_web(env, token)

    def ensure_worker(self) -> None:
        """A real Celery worker (the fan-out's storm launches real tasks)."""
        if not (self.stack.worker and self.stack.worker.alive()):
            self.stack.workers = [w for w in self.stack.workers if w.alive()]
            self.stack.worker = None
            self.stack.start_worker()

    def stop_worker(self) -> None:
        """The load is synthetic from here on: a launch must not start real work."""
        import signal

        if self.stack.worker and self.stack.worker.alive():
            self.stack.worker.stop(signal.SIGTERM)

    def start_process(self, name: str, args: list[str], db: int = 0, env: dict[str, str] | None = None) -> Process:
        proc_env = dict(self.stack.env, REDIS_URL=db_url(self.stack.redis_url, db), **(env or {}))
        proc = Process(name, args, proc_env, self.logdir)
        self.extra.append(proc)
        return proc

    def start_relay(self, module: str, db: int = 0) -> tuple[Process, str]:
        """A baseline relay (`python -m <module> --port P`) with /healthz; (process, base URL)."""
        port = free_port()
        proc = self.start_process(f"{module.rsplit('.', 1)[-1]}-{port}", [PYTHON, "-m", module, "--port", str(port)],
                                  db)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(f"{url}/healthz", timeout=2).status_code == 200, 30, what=module)
        return proc, url

    def start_flower(self, name: str, db: int = 0) -> tuple[Process, str]:
        """Flower as the Procfile runs it, subscribed (a probe event seen) before it returns."""
        proc, url = self.stack.start_flower(name, db=db)
        wait_subscribed(lambda: flower_knows_probe(url), 30, "flower", url=db_url(self.stack.redis_url, db))
        return proc, url

    def stop(self) -> None:
        for proc in reversed(self.extra):
            proc.stop()
        self.stack.stop()
