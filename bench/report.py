"""Turns the load benchmark's results into report.md (goals first) and report.png."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def _get(data: Any, *path: Any) -> Any:
    for key in path:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and isinstance(key, int) and -len(data) <= key < len(data):
            data = data[key]
        else:
            return None
    return data


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        value = round(value, digits)
        if value == int(value) and abs(value) >= 100:
            value = int(value)
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def rounds(results: dict[str, Any], relay: str) -> list[dict[str, Any]]:
    return [r for r in _get(results, "fanout", "rounds") or [] if r.get("relay") == relay and "lag_ms" in r]


def round_for(results: dict[str, Any], relay: str, clients: int) -> dict[str, Any] | None:
    return next((r for r in rounds(results, relay) if r["clients"] == clients), None)


# ---- goals ------------------------------------------------------------------------------------

def _at_most(measured: float | None, target: float, unit: str) -> tuple[str, str]:
    if measured is None:
        return "not measured", ""
    if measured <= target:
        return "met", ""
    ratio = f" ({measured / target:.1f}x the target)" if target else ""
    return "MISSED", f"by {_fmt(measured - target, unit)}{ratio}"


def _at_least(measured: float | None, target: float, unit: str) -> tuple[str, str]:
    if measured is None:
        return "not measured", ""
    if measured >= target:
        return "met", ""
    return "MISSED", f"by {_fmt(target - measured, unit, 2)} ({100 * measured / target:.0f}% of the target)"


def goals(results: dict[str, Any]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []

    def add(goal: str, target: str, measured: str, reference: str, verdict: tuple[str, str]) -> None:
        rows.append({"goal": goal, "target": target, "measured": measured, "reference": reference,
                     "verdict": verdict[0] + (f" {verdict[1]}" if verdict[1] else "")})

    for regime in _get(results, "latency", "regimes") or []:
        ours, naive = regime.get("ours") or {}, regime.get("naive") or {}
        what = f"one task reporting {regime['settings']['name']}"
        add(f"1. Idle latency p50 ({what})", "<= 30 ms", _fmt(ours.get("p50"), " ms"),
            f"naive {_fmt(naive.get('p50'), ' ms')}", _at_most(ours.get("p50"), 30, " ms"))
        add(f"1. Idle latency p99 ({what})", "<= 150 ms", _fmt(ours.get("p99"), " ms"),
            f"naive {_fmt(naive.get('p99'), ' ms')}", _at_most(ours.get("p99"), 150, " ms"))

    ours_rounds = rounds(results, "ours")
    if ours_rounds:
        worst = min(r["terminal_delivered_share"] or 0 for r in ours_rounds)
        naive_shares = ", ".join(f"{r['clients']}: {100 * (r['terminal_delivered_share'] or 0):.1f}%"
                                 for r in rounds(results, "naive"))
        counts = ", ".join(str(r["clients"]) for r in ours_rounds)
        add(f"2. Terminal states delivered during the storm ({counts} clients)", "100% at every count",
            f"lowest {100 * worst:.2f}%", f"naive {naive_shares}", _at_least(100 * worst, 100, " points"))
    for clients, target in ((500, 200), (1000, 1000)):
        r, n = round_for(results, "ours", clients), round_for(results, "naive", clients)
        if r is None and not ours_rounds:
            continue
        p99 = _get(r, "lag_ms", "p99")
        ref = (f"naive p99 {_fmt(_get(n, 'lag_ms', 'p99'), ' ms')} over "
               f"{100 * (n.get('terminal_delivered_share') or 0):.1f}% delivered" if n else "naive n/a")
        add(f"2. Lag p99 at {clients} clients (all clients; they share the 2 cores with the server)",
            f"<= {target} ms", _fmt(p99, " ms"), ref, _at_most(p99, target, " ms"))
        probe = _get(r, "probe", "lag_ms", "p99")
        if probe is not None:
            add(f"2. Lag p99 at {clients} clients (the probe client, in a process of its own)", f"<= {target} ms",
                _fmt(probe, " ms"), f"naive probe {_fmt(_get(n, 'probe', 'lag_ms', 'p99'), ' ms')}",
                _at_most(probe, target, " ms"))
    if ours_rounds:
        cpu = max((_get(r, "cpu_storm", "percent_of_core") or 0) for r in ours_rounds)
        top = max(ours_rounds, key=lambda r: _get(r, "cpu_storm", "percent_of_core") or 0)
        naive_cpu = ", ".join(f"{r['clients']}: {_fmt(_get(r, 'cpu_storm', 'percent_of_core'), '%')}"
                              for r in rounds(results, "naive"))
        verdict = ("met", "") if cpu < 100 else ("MISSED", f"by {cpu - 100:.0f} points")
        add("2. Web process CPU during the storm", "< 100% of one core",
            f"highest {_fmt(cpu, '%')} (at {top['clients']} clients)", f"naive {naive_cpu}", verdict)

    ingest = results.get("ingest") or {}
    if ingest:
        for label, web_key, flower_key in (("with Flower listening too", "web_sustained_rate", "flower_sustained_rate"),
                                           ("each alone", "web_alone_sustained_rate", "flower_alone_sustained_rate")):
            web, flower = ingest.get(web_key), ingest.get(flower_key)
            peak_key = web_key.replace("sustained_rate", "peak_throughput")
            flower_peak = ingest.get(flower_key.replace("sustained_rate", "peak_throughput"))
            add(f"3. Ingest, highest rate kept up with nothing lost ({label})", ">= 20,000 events/s",
                f"{_fmt(web, ' events/s')} (peak throughput {_fmt(ingest.get(peak_key), '/s')})",
                f"Flower {_fmt(flower, ' events/s') if flower else 'below the lowest rate tried'} "
                f"(peak {_fmt(flower_peak, '/s')})", _at_least(web, 20000, " events/s"))
            if web and flower:
                add(f"3. Ingest vs Flower ({label})", ">= 2x Flower", f"{web / flower:.2f}x", "",
                    _at_least(web / flower, 2, "x"))
            elif web and ingest.get(peak_key) and flower_peak:
                ratio = ingest[peak_key] / flower_peak
                add(f"3. Ingest vs Flower ({label})", ">= 2x Flower",
                    f"{ratio:.2f}x (peak throughputs: Flower sustained no rate tried)", "", _at_least(ratio, 2, "x"))
        add("3. Tasks lost (all rungs, after reconciliation)", "0", _fmt(ingest.get("web_tasks_wrong")),
            f"Flower never saw succeed: {_fmt(ingest.get('flower_tasks_lost'))}",
            _at_most(ingest.get("web_tasks_wrong"), 0, " tasks"))

    launch = results.get("launch") or {}
    if launch:
        add("4. Launch throughput vs `.delay()` loop", ">= 0.5x",
            f"{_fmt(_get(launch, 'post', 'per_second'), '/s')} "
            f"(p99 {_fmt(_get(launch, 'post', 'latency_ms', 'p99'), ' ms')})",
            f"`.delay()` {_fmt(_get(launch, 'delay', 'per_second'), '/s')} (p99 "
            f"{_fmt(_get(launch, 'delay', 'latency_ms', 'p99'), ' ms')}); ratio {_fmt(launch.get('ratio'), '', 2)}",
            _at_least(launch.get("ratio"), 0.5, "x"))

    memory = results.get("memory") or {}
    if memory:
        rss = _get(memory, "after_mb", "web", "rss")
        add(f"5. Web RSS with {_fmt(memory.get('tasks_in_history'))} tasks in history", "< 150 MB",
            f"{_fmt(rss, ' MB')} (peak {_fmt(_get(memory, 'after_mb', 'web', 'peak'), ' MB')}); "
            f"Redis {_fmt(memory.get('redis_bytes_per_task'), ' B/task')}",
            f"Flower {_fmt(_get(memory, 'after_mb', 'flower', 'rss'), ' MB')}", _at_most(rss, 149.9, " MB"))

    throttle = results.get("throttle") or {}
    if throttle:
        primes, light = throttle.get("primes") or {}, throttle.get("light") or {}
        reporter = throttle.get("light_reporter") or {}
        per_call = f"cost per call: progress() {_fmt(light.get('ns_per_call'), ' ns')}" + (
            f", Progress reporter {_fmt(reporter.get('ns_per_call'), ' ns')}" if reporter else "")
        add(f"Progress throttle: demo `primes` task, {_fmt(primes.get('calls'))} progress calls", "<= 5% slower",
            f"+{_fmt(primes.get('overhead_percent'), '%')} ({_fmt(primes.get('without_s'), ' s', 3)} -> "
            f"{_fmt(primes.get('with_s'), ' s', 3)}; {_fmt(primes.get('reports_sent'))} reports sent, final value "
            f"{'stored' if primes.get('final_value_stored') else 'NOT stored'})",
            per_call, _at_most(primes.get("overhead_percent"), 5, " points"))
    return rows


# ---- tables -----------------------------------------------------------------------------------

def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def markdown(results: dict[str, Any]) -> str:
    machine = results.get("machine") or {}
    load = machine.get("loadavg_at_start") or [None]
    out = [f"# Load benchmark ({results.get('when')}, {results.get('profile')} run, "
           f"{machine.get('cores')} cores, load average at start {_fmt(load[0], '', 2)}, "
           f"code {results.get('code')})", "",
           "Our web process (`python serve.py`) side by side with the naive relay (`bench/naive_relay.py`: one "
           "Socket.IO message per Celery event), Flower and a plain `.delay()` loop, in the same run on the same "
           "Redis. Command: `make bench` (`python -m bench.run`), quick mode `python -m bench.run --quick`.", "",
           "## Goals", ""]
    out += _table(["Goal", "Target", "Ours", "Reference (same run)", "Verdict"],
                  [[g["goal"], g["target"], g["measured"], g["reference"], g["verdict"]] for g in goals(results)])

    latency = results.get("latency") or {}
    if latency:
        out += ["", "## 1. Idle latency: a worker's progress call to a connected client (ms)", "",
                "Real worker task `steps`, tasks one after another, a python-socketio client; the progress "
                "throttle lets at most one report per 100 ms through.", ""]
        rows = []
        for regime in latency.get("regimes") or []:
            cfg = regime["settings"]
            for name in ("ours", "naive"):
                v = regime.get(name) or {}
                rows.append([f"{cfg['name']} ({cfg['tasks']} tasks x {cfg['steps']} steps, {cfg['delay']} s apart)",
                             name, v.get("n"), v.get("p50"), v.get("p95"), v.get("p99"), v.get("max")])
        out += _table(["regime", "relay", "samples", "p50", "p95", "p99", "max"], rows)

    fanout = results.get("fanout") or {}
    if fanout:
        cfg = fanout.get("settings") or {}
        out += ["", "## 2. Fan-out during the storm", "",
                f"{cfg.get('tasks')} tasks x {cfg.get('steps')} progress events through Celery's EventDispatcher at "
                f"{cfg.get('rate')} events/s; lag is receive time minus the object's `updated` (terminal states: "
                f"minus `finished`), over every task object received. Drain cap after the storm: ours "
                f"{cfg.get('ours_drain_s')} s, naive {cfg.get('naive_drain_s')} s at most.", ""]
        rows = []
        for r in fanout.get("rounds") or []:
            if "lag_ms" not in r:
                rows.append([r.get("clients"), r.get("relay"), r.get("skipped") or r.get("error")] + [""] * 9)
                continue
            lag, term = r["lag_ms"], r["terminal_lag_ms"]
            share = r["terminal_delivered_share"]
            rows.append([
                r["clients"], r["relay"],
                f"{100 * share:.1f}%" + (f" (cap {r['drain_cap_s']:.0f} s hit)" if r.get("drain_capped") else ""),
                f"{_fmt(lag.get('p50'))} / {_fmt(lag.get('p99'))}",
                f"{_fmt(term.get('p50'))} / {_fmt(term.get('p99'))}",
                f"{_fmt(_get(r, 'cpu_storm', 'percent_of_core'), '%')} "
                f"(waited {_fmt(_get(r, 'cpu_storm', 'waiting_for_cpu_percent'), '%')})",
                _fmt(_get(r, "cpu_storm_and_drain", "percent_of_core"), "%"),
                _fmt(r.get("vm_hwm_mb")),
                f"{_fmt(r['storm'].get('rate'))}/s, {_fmt(r.get('relay_listener_events'))} seen; machine "
                f"{_fmt(_get(r, 'machine_cpu_storm', 'busy_percent_of_all_cores'), '%')} busy",
                f"{_fmt(_get(r, 'probe', 'lag_ms', 'p50'))} / {_fmt(_get(r, 'probe', 'lag_ms', 'p99'))}"
                if r.get("probe") else "",
                " + ".join(f"{n}: {_fmt(_get(c, 'percent_of_core'), '%')} "
                           f"(waited {_fmt(_get(c, 'waiting_for_cpu_percent'), '%')})"
                           for n, c in zip(r.get("client_processes") or [], r.get("client_process_cpu_storm") or [],
                                           strict=False)),
                f"{r.get('connected')}/{r['clients']} in {_fmt(r.get('connect_s'), ' s')}; "
                f"{r.get('reconnects')} reconnects",
            ])
        out += _table(["clients", "relay", "terminal delivered", "lag p50 / p99 ms", "terminal lag p50 / p99 ms",
                       "web CPU (storm), and time it waited for a CPU", "web CPU (storm+drain)", "peak RSS MB",
                       "storm rate; events the relay saw; machine busy (all cores)",
                       "probe client lag p50 / p99 ms", "client processes (clients: CPU and CPU wait during the storm)",
                       "connected; reconnects"], rows)

    ingest = results.get("ingest") or {}
    if ingest:
        cfg = ingest.get("settings") or {}
        out += ["", "## 3. Ingest: synthetic events PUBLISHed straight to the broker", "",
                f"Each task: sent, received, started, {cfg.get('progress')} progress, succeeded; results stored in the "
                "backend before `task-succeeded`. Kept up = had taken in every event at most 0.5 s (or 10% of the "
                "publish time) after the last was published; sustained = kept up and lost nothing; throughput = "
                "events / (time the last was taken in - time the first was published). Tasks right = every task "
                "SUCCESS in GET /api/tasks (after reconciliation, 15 s at most). \"No answer for N s\": the longest "
                "time the consumer's HTTP endpoint (our /healthz, Flower's /metrics) left a poll unanswered during "
                "the rung. First our listener and Flower on "
                "the same stream (as they run in production), then each alone (Flower on another Redis database), "
                "so that neither takes CPU from the other.", ""]

        def side(r: dict[str, Any], name: str) -> list[str]:
            v = r.get(name)
            if not v:
                return ["", "", ""]
            behind = _fmt(v["caught_up_after_flood_s"], " s")
            waited = _fmt(_get(v, "cpu", "waiting_for_cpu_percent"), "%")
            silent = v.get("longest_without_answer_s")
            cells = [f"{_fmt(v['lost'])} lost, {_fmt(v['throughput'])}/s, +{behind}"
                     + (" **sustained**" if v["sustained"] else "")
                     + (f"; no answer for {silent} s" if silent and silent > 1.5 else ""),
                     f"{_fmt(v.get('cpu_us_per_event'))} (waited {waited})"]
            if name == "web":
                tasks = v["tasks"]
                cells.append(f"{tasks['success_in_api']}/{tasks['total']} in {tasks['seconds_to_right']} s")
            else:
                cells.append(f"{_fmt(v['tasks_succeeded'])}/{_fmt(r['tasks'])}")
            return cells

        for title, key in (("Together", "rungs"), ("Ours alone", "web_alone_rungs"),
                           ("Flower alone", "flower_alone_rungs")):
            rungs = ingest.get(key) or []
            if not rungs:
                continue
            rows = []
            for r in rungs:
                if "achieved_rate" not in r:
                    rows.append([_fmt(r.get("target_rate")), r.get("skipped"), ""] + [""] * 6)
                    continue
                rows.append([_fmt(r["target_rate"]), _fmt(r["achieved_rate"]), _fmt(r["events"]),
                             _fmt(_get(r, "machine_cpu", "busy_percent_of_all_cores"), "%"),
                             *side(r, "web"), *side(r, "flower")])
            out += ["", f"{title}:", ""]
            out += _table(["target /s", "achieved /s", "events", "machine busy",
                           "ours: lost, throughput, caught up after", "ours CPU µs/event (CPU wait)",
                           "ours tasks right", "Flower: lost, throughput, caught up after",
                           "Flower CPU µs/event (CPU wait)", "Flower tasks succeeded"], rows)

    launch = results.get("launch") or {}
    if launch:
        post, delay = launch.get("post") or {}, launch.get("delay") or {}
        out += ["", "## 4. Launch throughput", ""]
        out += _table(["how", "count", "per second", "p50 ms", "p99 ms", "notes"], [
            [f"POST /api/tasks, {post.get('concurrency')} concurrent (aiohttp)", post.get("requests"),
             post.get("per_second"), _get(post, "latency_ms", "p50"), _get(post, "latency_ms", "p99"),
             f"statuses {post.get('statuses')}; web CPU {_fmt(_get(post, 'web_cpu', 'percent_of_core'), '%')}"],
            ["`steps.delay()` loop, one process", delay.get("calls"), delay.get("per_second"),
             _get(delay, "latency_ms", "p50"), _get(delay, "latency_ms", "p99"), ""]])

    memory = results.get("memory") or {}
    if memory:
        out += ["", "## 5. Memory with a full history", "",
                f"{_fmt(_get(memory, 'settings', 'tasks'))} tasks streamed as events "
                f"({_get(memory, 'settings', 'kinds')}) at {_fmt(_get(memory, 'flood', 'rate'))} events/s into a fresh "
                "web process and a fresh Flower.", ""]
        rb = memory.get("redis_bytes") or {}
        per_key = ", ".join(f"{key.split(':')[1]} {_fmt(value)}" for key, value in rb.items())
        out += _table(["measure", "value"], [
            ["tasks in the dashboard's history", _fmt(memory.get("tasks_in_history"))],
            ["web RSS before / after / peak (MB)", f"{_fmt(_get(memory, 'before_mb', 'web', 'rss'))} / "
             f"{_fmt(_get(memory, 'after_mb', 'web', 'rss'))} / {_fmt(_get(memory, 'after_mb', 'web', 'peak'))}"],
            ["web RSS after a snapshot and a page (MB)", _fmt(_get(memory, "web_after_reads_mb", "rss"))],
            ["web settled after the flood", _fmt(memory.get("web_settled_s"), " s")],
            ["Flower RSS before / after / peak (MB)", f"{_fmt(_get(memory, 'before_mb', 'flower', 'rss'))} / "
             f"{_fmt(_get(memory, 'after_mb', 'flower', 'rss'))} / {_fmt(_get(memory, 'after_mb', 'flower', 'peak'))}"],
            ["Flower events processed", f"{_fmt(memory.get('flower_events_seen'))} of "
             f"{_fmt(memory.get('flower_events_expected'))} (settled {_fmt(memory.get('flower_settled_s'), ' s')} "
             f"after the flood); tasks it saw: {_fmt(memory.get('flower_tasks_seen'))}"],
            ["Redis bytes per task (dashboard:* keys)", f"{_fmt(memory.get('redis_bytes_per_task'))} "
             f"({per_key} bytes)"],
            ["result backend bytes per task (Celery's, sampled)", _fmt(memory.get("backend_bytes_per_task_sample"))],
            ["snapshot on connect", f"{_get(memory, 'snapshot', 'tasks')} tasks, "
             f"{_fmt(_get(memory, 'snapshot', 'bytes'))} bytes, {_get(memory, 'snapshot', 'ms')} ms"],
            ["GET /api/tasks?limit=50", f"{memory.get('page_50_ms')} ms"],
        ])

    throttle = results.get("throttle") or {}
    if throttle:
        out += ["", "## Progress throttle", "",
                "Progress reported on every iteration of a loop, on the real bound task object (`tasks.demo.primes` "
                f"with a request pushed, as in a worker); PROGRESS_INTERVAL {throttle.get('progress_interval_s')} s. "
                "`without` is the same loop with the progress call removed. Best of the runs.", ""]
        bodies = (("demo `primes` task as written in tasks/demo.py", "primes"),
                  ("`progress(self, n, total, msg)` after an add and a multiply", "light"),
                  ("`Progress(self, total)` reporter after an add and a multiply", "light_reporter"))
        out += _table(["loop", "calls", "without (s)", "with (s)", "overhead", "ns per call", "reports sent",
                       "final value stored"],
                      [[label, _fmt(v.get("calls")), v.get("without_s"), v.get("with_s"),
                        _fmt(v.get("overhead_percent"), "%"), v.get("ns_per_call"), v.get("reports_sent"),
                        v.get("final_value_stored")]
                       for label, key in bodies if (v := throttle.get(key))])

    for name, prof in (results.get("profiles") or {}).items():
        if "samples" not in prof:
            continue
        out += ["", f"## Profile: {name} (py-spy, {prof['samples']} samples of the process running, "
                f"{prof['file']})", ""]
        rows = [[f"`{frame}`", f"{pct}%", f"`{inc[0]}`" if inc else "", f"{inc[1]}%" if inc else ""]
                for (frame, pct), inc in zip(prof["self_percent"], prof["inclusive_percent"], strict=False)]
        out += _table(["own time in", "share", "time under", "share"], rows)

    out += ["", f"Steps (s): {results.get('timings_s')}; total {results.get('total_s')} s; load average at end "
            f"{_fmt((machine.get('loadavg_at_end') or [None])[0], '', 2)}. The machine is shared: absolute numbers "
            "are noisy, the side-by-side ratios less so."]
    if results.get("errors"):
        out += ["", f"Errors: {results['errors']}"]
    return "\n".join(out) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lag_ax, share_ax) = plt.subplots(1, 2, figsize=(13, 5))
    series = (("ours", "lag_ms", "tab:blue", "our web, all clients"),
              ("ours", "probe", "tab:green", "our web, probe client (own process)"),
              ("naive", "lag_ms", "tab:red", "naive relay, all clients"))
    counts: set[int] = set()
    for relay, key, color, label in series:
        data = sorted(rounds(results, relay), key=lambda r: r["clients"])
        for pct, style in (("p50", "--"), ("p99", "-")):
            path_keys = ("probe", "lag_ms", pct) if key == "probe" else ("lag_ms", pct)
            points = [(r["clients"], max(1, _get(r, *path_keys))) for r in data if _get(r, *path_keys) is not None]
            if points:
                counts.update(x for x, _ in points)
                lag_ax.plot(*zip(*points, strict=True), linestyle=style, marker="o", color=color,
                            label=f"{label} {pct}")
    for relay, color, label in (("ours", "tab:blue", "our web"), ("naive", "tab:red", "naive relay")):
        data = sorted(rounds(results, relay), key=lambda r: r["clients"])
        if data:
            share_ax.plot([r["clients"] for r in data], [100 * (r["terminal_delivered_share"] or 0) for r in data],
                          "-", marker="o", color=color, label=label)
    for clients, target in ((500, 200), (1000, 1000)):
        lag_ax.plot([clients], [target], marker="_", markersize=24, markeredgewidth=2, color="black", linestyle="")
    lag_ax.plot([], [], marker="_", linestyle="", color="black", markersize=12, label="goal: p99 at 500 / 1,000")
    ticks = sorted(counts)
    for ax in (lag_ax, share_ax):
        ax.set_xscale("log")
        if ticks:
            ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.grid(True, which="both", alpha=0.3)
    lag_ax.set(yscale="log", xlabel="connected clients", ylabel="lag, progress call to client (ms)",
               title="Lag during a ~3,000 events/s storm")
    lag_ax.legend(fontsize=7, handlelength=3.5)
    share_ax.set(ylim=(-2, 105), xlabel="connected clients", ylabel="terminal states delivered (%)",
                 title="Terminal states delivered (within the drain cap)")
    share_ax.legend(fontsize=8)
    fig.text(0.01, 0.01, f"{results.get('when')}, {(results.get('machine') or {}).get('cores')} cores shared by "
             "server, Redis, storm and client swarms: from 500 clients the swarms wait for CPU (see report.md)",
             fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def missing_numbers(results: dict[str, Any]) -> list[str]:
    """The sections that produced no numbers (what --quick checks)."""
    checks = {
        "latency": _get(results, "latency", "regimes", 0, "ours", "p50") is not None,
        "latency (naive)": _get(results, "latency", "regimes", 0, "naive", "p50") is not None,
        "fanout": rounds(results, "ours")
        and all(_get(r, "lag_ms", "p50") is not None for r in rounds(results, "ours")),
        "fanout (naive)": rounds(results, "naive"),
        "throttle": _get(results, "throttle", "primes", "overhead_percent"),
        "launch": _get(results, "launch", "post", "per_second") and _get(results, "launch", "delay", "per_second"),
        "ingest": _get(results, "ingest", "web_peak_throughput"),
        "ingest (flower)": _get(results, "ingest", "rungs", 0, "flower", "events_seen") is not None,
        "ingest (alone)": _get(results, "ingest", "web_alone_rungs", 0, "web", "events_seen") is not None
        and _get(results, "ingest", "flower_alone_rungs", 0, "flower", "events_seen") is not None,
        "memory": _get(results, "memory", "after_mb", "web", "rss") and _get(results, "memory", "redis_bytes_per_task"),
    }
    return [name for name, value in checks.items() if not value]
