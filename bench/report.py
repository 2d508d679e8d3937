"""Turns the load benchmark's results into report.md (goals first, every figure side by side: ours,
Flower, the baselines; the figure that does not flatter us beside the one that does) and report.png."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.progress_cost import median_interval

RELAY_NAMES = {"ours": "ours", "naive": "naive relay", "mq": "Flask-SocketIO message queue",
               "ours-collector": "ours, the clients' garbage collector on"}


def _get(data: Any, *path: Any) -> Any:
    for key in path:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and isinstance(key, int) and -len(data) <= key < len(data):
            data = data[key]
        else:
            return None
    return data


def _span(bounds: Any) -> str:
    """'a% to b%' for a [low, high] pair of percentages; 'n/a' without one."""
    if not bounds:
        return "n/a"
    return f"{_fmt(bounds[0], '%')} to {_fmt(bounds[1], '%')}"


def _quartiles(figure: dict[str, Any]) -> list[float] | None:
    """The first and third quartiles of a progress-cost figure's pairs (bench.progress_cost.paired):
    from its per-pair overheads, else from its CPU runs (older reports), else None."""
    overheads = figure.get("overheads_percent")
    if not overheads and figure.get("runs_with_s") and figure.get("runs_without_s"):
        overheads = sorted(100 * (w - b) / b for b, w in zip(figure["runs_without_s"], figure["runs_with_s"],
                                                                  strict=True) if b)
    if not overheads or len(overheads) < 4:
        return None
    ordered = sorted(overheads)
    return [round(ordered[len(ordered) // 4], 1), round(ordered[(3 * len(ordered)) // 4], 1)]


def _or_na(value: Any) -> Any:
    return "n/a" if value is None else value


def _median_ci(figure: dict[str, Any]) -> list[float] | None:
    """The 95% confidence interval of a progress-cost figure's median overhead, from its pairs' order
    statistics (bench.progress_cost.median_interval); None under 20 pairs, where `_quartiles` stands
    in. Where the pairs are many (the 2 us body's 0.1 s slices), this is what says whether the median
    is above or below the goal's line; the spread of single pairs (a slice holds one report or two)
    is wider than the median's uncertainty."""
    interval = median_interval(figure.get("overheads_percent") or [])
    return None if interval is None else [round(interval[0], 1), round(interval[1], 1)]


def _noise_bound(bounds: Any, line: float) -> str | None:
    """A verdict for a median whose middle pairs (`bounds`: the first and third quartiles, or the
    whole range where there are too few pairs) fall on both sides of the goal's line: neither met
    nor missed on this run's evidence. None when they fall on one side: the median decides. (One
    odd pair among seven no longer makes a +18% median "undecided".)"""
    if not bounds or not bounds[0] < line < bounds[1]:
        return None
    return ("UNDECIDED: within this machine's noise (the median's 95% confidence interval where the pairs "
            f"are many, else the pairs' middle half or range: {_span(bounds)})")


def _collector_verdict(verdict: str, collector_on: Any, target: float) -> str:
    """The fan-out lag verdict, which is measured with the clients' garbage collector paused (its
    pauses walk every client's objects and would be counted as the server's lag), said as such
    beside the verdict with the collector on, as Python runs by default, where that one differs."""
    p99 = _get(collector_on, "lag_ms", "p99")
    if p99 is None:
        return verdict
    other = _at_most(p99, target, " ms")
    if other == verdict:
        return f"{verdict} (with the clients' garbage collector on too)"
    return f"{verdict} with the clients' garbage collector paused; {other} with it on (p99 {_fmt(p99, ' ms')})"


def _worse(verdict: str, other: str | None) -> str:
    """Of two verdicts on the same goal (CPU and wall-clock time), the one that flatters less: MISSED,
    then UNDECIDED, then met; each named when they differ."""
    if other is None or other == verdict:
        return verdict

    def rank(v: str) -> int:
        return 0 if v.startswith("MISSED") else 1 if v.startswith("UNDECIDED") else 3 if v == "met" else 2

    first, second = sorted(((rank(verdict), "CPU", verdict), (rank(other), "wall clock", other)))
    return f"{first[2]} (on {first[1]}; on {second[1]}: {second[2]})"


def _worse_of(verdict: str, other: str, name: str) -> str:
    """Of two verdicts on one goal, the less flattering; the other's named where they differ."""
    if other == verdict or other == "not measured":
        return verdict
    if verdict == "not measured":
        return f"{other} (on {name})"
    if other.startswith("MISSED") and not verdict.startswith("MISSED"):
        return f"{other} (on {name}; otherwise {verdict})"
    return f"{verdict} ({name}: {other})"


def _bounded_ratio(web: float, flower: float, web_missed: float | None, flower_missed: float | None) -> str:
    """The ingest verdict (>= 2x Flower) from each side's sustained rate and the first rate above it
    that it missed: each side's true rate lies between the two, so the ratio lies between
    web / flower_missed and web_missed / flower (a side that missed no rate above has no upper
    bound). Met only if the low end is 2x or more; MISSED if the high end is under 2x; else
    UNDECIDED: the rungs are too far apart to tell."""
    low = web / flower_missed if flower_missed else None
    high = web_missed / flower if web_missed else None
    span = f"{web / flower:.2f}x at the rungs sustained; between {_fmt(low, 'x', 2) if low else 'n/a'} and " \
           f"{_fmt(high, 'x', 2) if high else 'no bound'} by the rungs each side missed"
    if low is not None and low >= 2:
        return f"met ({span})"
    if high is not None and high < 2:
        return f"MISSED by {_fmt(2 - high, 'x', 2)} at best ({span})"
    return f"UNDECIDED: the rungs are too far apart to tell ({span})"


def _client_bound(r: Any) -> str:
    """' (client-bound: ...)' for a fan-out round whose one client process was near a full core: its lag
    is then mostly that process reading every client's messages in turn, not the server's."""
    cpu = _get(r, "client_process_cpu_pct")
    if cpu is None or cpu < 90:
        return ""
    return f" (client-bound: the client process at {_fmt(cpu, '%')} CPU, the server at " \
           f"{_fmt(_get(r, 'server_cpu', 'percent_of_core'), '%')})"


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


def _worst(results: dict[str, Any], relay: str, *path: str) -> float | None:
    """The highest value at `path` over a relay's rounds."""
    values = [v for r in rounds(results, relay) if (v := _get(r, *path)) is not None]
    return max(values) if values else None


def round_for(results: dict[str, Any], relay: str, clients: int) -> dict[str, Any] | None:
    return next((r for r in rounds(results, relay) if r["clients"] == clients), None)


# ---- verdicts ---------------------------------------------------------------------------------

def _at_most(measured: float | None, target: float, unit: str) -> str:
    if measured is None:
        return "not measured"
    if measured <= target:
        return "met"
    ratio = f" ({measured / target:.1f}x the target)" if target else ""
    return f"MISSED by {_fmt(measured - target, unit)}{ratio}"


def _at_least(measured: float | None, target: float, unit: str) -> str:
    if measured is None:
        return "not measured"
    if measured >= target:
        return "met"
    return f"MISSED by {_fmt(target - measured, unit, 3)} ({100 * measured / target:.0f}% of the target)"


def _lag(r: dict[str, Any] | None, key: str = "lag_ms") -> str:
    if r is None:
        return "n/a"
    return (f"{_fmt(r.get('delivered_pct'), '%')} delivered, p50 {_fmt(_get(r, key, 'p50'), ' ms')}, "
            f"p99 {_fmt(_get(r, key, 'p99'), ' ms')}")


def goals(results: dict[str, Any]) -> list[list[str]]:
    """Rows: goal, target, ours (the figure that counts), the same figure for Flower or the baselines,
    the flattering figure beside it (where there is one), verdict."""
    rows: list[list[str]] = []

    def add(goal: str, target: str, ours: str, others: str, flattering: str, verdict: str) -> None:
        rows.append([goal, target, ours, others, flattering, verdict])

    # -- fan-out
    ours_rounds = rounds(results, "ours")
    for clients, target in ((500, 200), (1000, 1000)):
        r = round_for(results, "ours", clients)
        if r is None and (not ours_rounds or results.get("profile") != "full"):
            continue  # the quick run's client counts are smaller
        others = "; ".join(f"{RELAY_NAMES[name]}: {_lag(round_for(results, name, clients))}"
                           for name in ("naive", "mq"))
        add(f"Fan-out, {clients} clients in one client process: terminal states delivered", "100%",
            _fmt(_get(r, "delivered_pct"), "%"), others, "", _at_least(_get(r, "delivered_pct"), 100, " points"))
        p99, last = _get(r, "lag_ms", "p99"), _get(r, "last_joiner_lag_ms", "p99")
        floor_p99 = _get(floor_for(results, clients), "lag_ms", "p99")
        add(f"Fan-out, {clients} clients: lag p99 over ALL clients", f"<= {target:,} ms", _fmt(p99, " ms"),
            "; ".join(f"{RELAY_NAMES[name]} p99 {_fmt(_get(round_for(results, name, clients), 'lag_ms', 'p99'), ' ms')}"
                      + _client_bound(round_for(results, name, clients))
                      for name in ("naive", "mq"))
            + f"; the measuring client's own floor (a bare server, our message size, no tick): p99 "
              f"{_fmt(floor_p99, ' ms')}",
            f"median (p50) {_fmt(_get(r, 'lag_ms', 'p50'), ' ms')}. NOT flattering: with the clients' garbage "
            f"collector on during the storm, as Python runs by default: "
            f"{_lag(round_for(results, 'ours-collector', clients))}",
            _collector_verdict(_at_most(p99, target, " ms"), round_for(results, "ours-collector", clients), target))
        add(f"Fan-out, {clients} clients: lag p99 of the client that joined LAST", f"<= {target:,} ms",
            _fmt(last, " ms"),
            "; ".join(f"{RELAY_NAMES[name]} "
                      f"{_fmt(_get(round_for(results, name, clients), 'last_joiner_lag_ms', 'p99'), ' ms')}"
                      for name in ("naive", "mq")),
            "NOT flattering: our server takes turns in its send order (web.sockets), so its last joiner is not "
            f"always served last; the worst single client's own p99: {_fmt(_get(r, 'worst_client_p99_ms'), ' ms')}",
            _worse_of(_at_most(last, target, " ms"), _at_most(_get(r, "worst_client_p99_ms"), target, " ms"),
                      "the worst client"))
    if ours_rounds:
        worst = max(ours_rounds, key=lambda r: _get(r, "messages_per_client_per_tick", "max") or 0)
        top = _get(worst, "messages_per_client_per_tick", "max")
        exact = [r.get("messages_per_client_per_batch_max") for r in ours_rounds
                 if r.get("messages_per_client_per_batch_max") is not None]
        # One message per batch says nothing of ticks by itself: the batches must also come no faster than
        # one per push tick (PUSH_INTERVAL), counted as the first client received them.
        rates = [(r.get("batches_per_second"), _get(r, "messages_per_client_per_tick", "tick_s")) for r in ours_rounds
                 if r.get("batches_per_second") is not None and _get(r, "messages_per_client_per_tick", "tick_s")]
        per_tick = max((rate * tick for rate, tick in rates), default=None)
        add("Under a storm: messages per client per server batch (numbered by the server), and server batches per "
            "push tick", "<= 1 and <= 1", f"max {_fmt(max(exact) if exact else None)} per batch; "
            f"{_fmt(per_tick, '', 2)} batches per tick, the busiest round's mean over its storm (batches per "
            "second x PUSH_INTERVAL; a mean: two batches in one tick would show only in the row below)",
            "the baselines number nothing", "",
            _worse_of(_at_most(max(exact) if exact else None, 1, ""), _at_most(per_tick, 1.0, ""), "batches per tick"))
        add("Under a storm: messages per client per push tick, by receive time (worst client count)", "<= 1",
            f"max {_fmt(top)}, p99 {_fmt(_get(worst, 'messages_per_client_per_tick', 'p99'))} "
            f"(at {worst['clients']} clients)",
            "; ".join(f"{RELAY_NAMES[name]} max {_fmt(_worst(results, name, 'messages_per_client_per_tick', 'max'))}"
                      for name in ("naive", "mq") if rounds(results, name)),
            _floor_windows(results, worst["clients"]), _at_most(top, 1, ""))
        sent = [(r.get("clients"), _get(r, "bytes_per_progress_update", "mean"),
                 _get(r, "bytes_per_progress_update", "full_mean"))
                for r in ours_rounds if _get(r, "bytes_per_progress_update", "mean")]
        every = [(r.get("clients"), _get(r, "bytes_per_progress_update", "all_mean"),
                  _get(r, "bytes_per_progress_update", "all_n")) for r in ours_rounds
                 if _get(r, "bytes_per_progress_update", "all_mean")]
        unheld = [(r.get("clients"), _get(r, "bytes_per_progress_update", "first_sightings")) for r in ours_rounds
                  if not _get(r, "bytes_per_progress_update", "mean")
                  and _get(r, "bytes_per_progress_update", "first_sightings")]
        if sent:
            mean = sum(s for _, s, _ in sent) / len(sent)
            full = sum(f for _, _, f in sent) / len(sent)
            naive = [_get(r, "bytes_per_progress_update", "mean") for r in rounds(results, "naive")]
            whole = [str(n) for n, s, f in sent if s >= f]
            # The JSON of the update's object (a delta or the whole task), not the engine.io packet.
            add("Bytes per progress update: the update's object as sent (a delta where smaller), by client count",
                "report; delta < full object",
                f"mean {_fmt(mean, ' B')}; " + "; ".join(f"{n} clients {_fmt(s, ' B')} / full {_fmt(f, ' B')}"
                                                         for n, s, f in sent)
                + "".join(f"; {n} clients: no sampled progress update of a task the client already held ({k} "
                          f"first sightings, each task's launch and progress in one batch: whole by need)"
                          for n, k in unheld),
                f"naive {_fmt(next((n for n in naive if n), None), ' B')}",
                f"the full task object: {_fmt(full, ' B')}. NOT flattering: every progress update as sent, the "
                "first sightings (whole) included: " + ("; ".join(f"{n} clients {_fmt(m, ' B')} ({k} updates)"
                                                             for n, m, k in every) or "n/a"),
                "met" if not whole else
                f"met at {', '.join(str(n) for n, s, f in sent if s < f) or 'no client count'}; at "
                f"{', '.join(whole)} clients every sampled update went out whole")
        measured_cpu = [c for r in ours_rounds if (c := _get(r, "server_cpu", "percent_of_core")) is not None]
        cpu = max(measured_cpu) if measured_cpu else None  # storms shorter than the sampler's interval: none
        peaks = [c for r in ours_rounds if (c := _get(r, "server_cpu", "peak_percent_of_core")) is not None]
        add("Web process CPU during the storm (highest)", "< 100% of one core",
            _fmt(cpu, "%") + (" over the storm" if cpu is not None else ""),
            "; ".join(f"{RELAY_NAMES[name]} {_fmt(_worst(results, name, 'server_cpu', 'percent_of_core'), '%')}"
                      for name in ("naive", "mq") if rounds(results, name)),
            f"NOT flattering: the busiest 0.1 s of any storm {_fmt(max(peaks) if peaks else None, '%')}",
            _at_most(cpu, 99.9, " points") if cpu is not None else "not measured")

    # -- ingest
    ingest = results.get("ingest") or {}
    if ingest:
        for label, web_key, flower_key, rungs_key in (
                ("together", "web_sustained_rate", "flower_sustained_rate", "rungs"),
                ("each alone", "web_alone_sustained_rate", "flower_alone_sustained_rate", None)):
            web, flower = ingest.get(web_key), ingest.get(flower_key)
            web_peak = ingest.get(web_key.replace("sustained_rate", "peak_applied_per_s"))
            flower_peak = ingest.get(flower_key.replace("sustained_rate", "peak_applied_per_s"))
            decoded = max((_get(r, "web", "decoded_per_s") or 0 for r in ingest.get(rungs_key or "web_alone_rungs")
                           or []), default=None)
            add(f"Ingest, events fully applied, sustained ({label}; 0 lost before reconciliation)", ">= 2x Flower",
                _fmt(web, " events/s"), f"Flower {_fmt(flower, ' events/s')}",
                f"ours decoded (not yet applied) up to {_fmt(decoded, '/s')}",
                _bounded_ratio(web, flower, ingest.get(web_key.replace("sustained_rate", "first_missed_rate")),
                               ingest.get(flower_key.replace("sustained_rate", "first_missed_rate")))
                if web and flower else
                ("Flower sustained no rate tried" if web else
                 "MISSED: ours sustained no rate tried" if flower else "not measured"))
            add(f"Ingest, highest rate with every event fully applied ({label}, catching up late allowed)",
                ">= 2x Flower",
                _fmt(web_peak, " events/s"), f"Flower {_fmt(flower_peak, ' events/s')}", "",
                (_at_least(web_peak / flower_peak, 2, "x") + f" ({web_peak / flower_peak:.2f}x)")
                if web_peak and flower_peak else
                ("MISSED: ours applied every event of no rung" if flower_peak else
                 "Flower applied every event of no rung" if web_peak else "not measured"))
        for label, key in (("together", ""), ("each alone", "_alone")):
            ours_lost = ingest.get(f"web{key}_events_lost_up_to_sustained")
            add(f"Events lost before reconciliation in the rungs up to the rate reported as sustained ({label})",
                "0", _fmt(ours_lost), f"Flower {_fmt(ingest.get(f'flower{key}_events_lost_up_to_sustained'))}", "",
                _at_most(ours_lost, 0, " events") if ours_lost is not None else "not measured (no rung sustained)")
        add("Events lost before reconciliation (every rung, rates up to the highest tried)",
            "reported", _fmt(ingest.get("web_events_lost_before_reconciliation")),
            f"Flower {_fmt(ingest.get('flower_events_lost'))}", "", "reported")
        unlisted = ingest.get("web_tasks_unlisted_after_reconciliation") or 0
        wrong = ingest.get("web_tasks_wrong_after_reconciliation")
        before = ingest.get("web_tasks_not_ended_before_reconciliation")
        add("Tasks lost after reconciliation (every rung)", "0",
            _fmt(wrong) + (f" (and {unlisted:,} the API could not list: QUERY_SCAN_LIMIT)" if unlisted else ""),
            f"Flower (no reconciliation) never applied task-succeeded: {_fmt(ingest.get('flower_tasks_lost'))}",
            f"ours before reconciliation: {_fmt(before)} tasks not stored as ended" if before is not None else "",
            _at_most(wrong, 0, " tasks") if wrong or not unlisted else f"not measured: {unlisted:,} tasks unlisted")

    # -- launch
    for mode, level in _launch_levels(results):
        post, delay = level.get("post") or {}, level.get("delay") or {}
        c = level["concurrency"]
        add(f"Launch throughput at concurrency {c}, {mode}: POST /api/tasks vs `.delay()`", ">= 0.5x",
            f"{_fmt(post.get('per_second'), '/s')} (p99 {_fmt(_get(post, 'latency_ms', 'p99'), ' ms')})",
            f"`.delay()` from {c} thread(s) {_fmt(delay.get('per_second'), '/s')} "
            f"(p99 {_fmt(_get(delay, 'latency_ms', 'p99'), ' ms')})",
            f"ratio {_fmt(level.get('ratio'), 'x', 3)}" + _rounds(level), _at_least(level.get("ratio"), 0.5, "x"))
        if level.get("attach"):
            attach = level["attach"]
            add(f"Launch throughput at concurrency {c}, {mode}, as the form sends it (no `duplicate`: the web first "
                "looks for an identical unfinished task and claims the parameters) vs `.delay()`", ">= 0.5x",
                f"{_fmt(attach.get('per_second'), '/s')} (p99 {_fmt(_get(attach, 'latency_ms', 'p99'), ' ms')})",
                "the same round's `.delay()` as the row above; NOT flattering: the row above sends `duplicate`, "
                "which skips both",
                f"ratio {_fmt(level.get('attach_ratio'), 'x', 3)}" + _medians(level, "attach_ratios"),
                _at_least(level.get("attach_ratio"), 0.5, "x"))
        if level.get("floor"):
            add(f"Launch at concurrency {c}, {mode}: the floor of the stack (Flask-SocketIO on eventlet, a view that "
                f"only calls apply_async) vs `.delay()`, and ours vs the floor", "reported",
                f"ours {_fmt(level.get('of_floor'), 'x', 3)} of the floor" + _medians(level, "of_floor_ratios"),
                f"the floor {_fmt(level.get('floor_ratio'), 'x', 3)} of `.delay()`" + _medians(level, "floor_ratios")
                + f"; in the round shown above {_fmt(_get(level, 'floor', 'per_second'), '/s')} "
                  f"(p99 {_fmt(_get(level, 'floor', 'latency_ms', 'p99'), ' ms')})",
                "", "reported")

    # -- memory
    memory = results.get("memory") or {}
    if memory:
        add(f"Memory with {_fmt(memory.get('tasks_in_history'))} tasks of history: web RSS + Redis used_memory",
            "reported beside Flower",
            f"{_fmt(memory.get('ours_total_mb'), ' MB')} (web {_fmt(_get(memory, 'web_after_reads_mb', 'rss'), ' MB')}"
            f" + Redis {_fmt(_get(memory, 'after_mb', 'redis_used_mb'), ' MB')})",
            f"Flower RSS {_fmt(memory.get('flower_rss_mb'), ' MB')} (+ the same result backend in Redis)",
            f"web + only the dashboard's keys {_fmt(memory.get('ours_process_plus_own_keys_mb'), ' MB')}; "
            f"web alone {_fmt(_get(memory, 'web_after_reads_mb', 'rss'), ' MB')}. NOT flattering, RSS against "
            f"RSS: web + redis-server's resident memory {_fmt(memory.get('ours_total_rss_mb'), ' MB')} (Redis "
            f"{_fmt(_get(memory, 'before_mb', 'redis_rss_mb'), ' MB')} before the flood)",
            "reported")

    # -- progress cost
    cost = results.get("progress_cost") or {}
    for key, label, floor in (("body_2us", "progress()", "floor"),
                              ("body_2us_reporter", "Progress reporter, `report(n)` as the README's tight loop",
                               "floor1"),
                              ("body_2us_reporter_args", "Progress reporter, a message and its arguments each call",
                               "floor")):
        v = cost.get(key)
        b = _get(cost, "blocks", key)
        if not v and not b:
            continue
        v = v or {}
        light = cost.get("light" + key[len("body_2us"):]) or {}
        wall = v.get("wall") or {}
        slices = (f"in 0.1 s slices with their reports (bench.progress_cost.sliced): CPU +"
                  f"{_fmt(v.get('overhead_percent'), '%')} ({_fmt(v.get('ns_per_call'), ' ns')} per call; median of "
                  f"{v.get('pairs')} pairs, from {_span(v.get('overhead_range_percent'))}"
                  + (f"; the median's 95% interval {_span(_median_ci(v))}" if _median_ci(v) else "") + "); "
                  f"wall clock +{_fmt(wall.get('overhead_percent'), '%')}")
        floor_text = ("an empty Python call with the same arguments costs "
                      f"{_fmt(_get(cost, 'light_' + floor, 'ns_per_call'), ' ns')} in the light loop, +"
                      + (f"{_fmt(_get(cost, 'blocks', 'body_2us_' + floor, 'overhead_percent'), '%')} on this body "
                         f"(interval {_span(_get(cost, 'blocks', 'body_2us_' + floor, 'interval_percent'))})"
                         if b else f"{_fmt(_get(cost, 'body_2us_' + floor, 'overhead_percent'), '%')} on this body"))
        if b:  # the goal's figure: millisecond blocks plus the reports measured apart (bench.progress_cost.blocked)
            bwall = b.get("wall") or {}
            add(f"Progress call cost, {label}: overhead on a {_fmt(cost.get('body_ns'), ' ns')} loop body",
                "< 5%", f"CPU +{_fmt(b.get('overhead_percent'), '%')} "
                f"(95% interval {_span(b.get('interval_percent'))}; {b.get('pairs')} pairs of 1 ms blocks, the "
                f"body {_fmt(b.get('body_ns'), ' ns')} as it ran, CPU; "
                f"everything counted: sum with / sum without), of which the {b.get('reports_sent')} reports "
                f"sent +{_fmt(b.get('reports_percent'), '%')} ({_fmt(b.get('ms_per_report'), ' ms', 2)} CPU "
                f"each); the median pair without a report +{_fmt(b.get('skipped_calls_percent'), '%')}; "
                f"wall clock +{_fmt(bwall.get('overhead_percent'), '%')} "
                f"(interval {_span(bwall.get('interval_percent'))})",
                f"in a light loop (add + multiply): {_fmt(light.get('ns_per_call'), ' ns')} per call",
                f"{floor_text}. The same loop {slices}",
                _worse(_noise_bound(b.get("interval_percent"), 5.0)
                       or _at_most(b.get("overhead_percent"), 4.99, " points"),
                       _noise_bound(bwall.get("interval_percent"), 5.0)
                       or _at_most(bwall.get("overhead_percent"), 4.99, " points") if bwall else None))
            continue
        add(f"Progress call cost, {label}: overhead on a {_fmt(cost.get('body_ns'), ' ns')} loop body",
            "< 5%", slices[0].upper() + slices[1:],
            f"in a light loop (add + multiply): {_fmt(light.get('ns_per_call'), ' ns')} per call",
            floor_text,
            _worse(_noise_bound(_median_ci(v) or _quartiles(v) or v.get("overhead_range_percent"), 5.0)
                   or _at_most(v.get("overhead_percent"), 4.99, " points"),
                   _noise_bound(_median_ci(wall) or _quartiles(wall) or wall.get("overhead_range_percent"), 5.0)
                   or _at_most(wall.get("overhead_percent"), 4.99, " points") if wall else None))

    # -- idle latency
    for regime in _get(results, "latency", "regimes") or []:
        ours = regime.get("ours") or {}
        what = f"one task reporting {regime['settings']['name']}"
        add(f"Idle latency p99 ({what})", "<= 150 ms", f"{_fmt(ours.get('p99'), ' ms')} (p50 {_fmt(ours.get('p50'))})",
            "; ".join(f"{RELAY_NAMES[n]} p99 {_fmt(_get(regime, n, 'p99'), ' ms')}" for n in ("naive", "mq")), "",
            _at_most(ours.get("p99"), 150, " ms"))
    return rows


# ---- tables -----------------------------------------------------------------------------------

def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _fanout(results: dict[str, Any]) -> list[str]:
    fanout = results.get("fanout") or {}
    if not fanout:
        return []
    cfg = fanout.get("settings") or {}
    out = ["", "## Fan-out: every client, and the one that joined last", "",
           f"{cfg.get('tasks')} real `steps` tasks of {cfg.get('steps')} steps and no delay, launched by as many "
           "sequential POST /api/tasks while N python-socketio clients (websocket, all in the benchmark's one "
           "process, sharing the 2 cores with the server) watch; the last client connects after all the others. "
           f"Before each of our rounds the history is topped up to {cfg.get('history', 200)} ended tasks (real "
           "launches), so that every client gets a full snapshot, as on a dashboard in use. "
           "Lag = a client's receive time of a task's terminal state minus the task's `finished` (bench/fanout.py). "
           "The clients' process has its garbage collector paused during each storm (bench.common.collector_paused: "
           "a full collection walks every client's objects, up to 465 ms at a time at 1,000 clients); the rows "
           "'ours, the clients' garbage collector on' measure ours again as Python runs by default. "
           "One relay runs at a time (our web process is stopped during the baselines' rounds, so that it "
           "takes in none of their events beside them), each with the same real worker (4 processes); the "
           "message-queue baseline has a worker of its own of the same size. Server CPU: the process serving "
           "the clients, over the storm.",
           ""]
    rows = []
    for r in fanout.get("rounds") or []:
        if "lag_ms" not in r:
            rows.append([r.get("clients"), RELAY_NAMES.get(r.get("relay"), r.get("relay")),
                         r.get("skipped") or r.get("error")] + [""] * 8)
            continue
        lag, last = r["lag_ms"], r.get("last_joiner_lag_ms") or {}
        ticks, size = r.get("messages_per_client_per_tick") or {}, r.get("bytes_per_progress_update") or {}
        rows.append([
            r["clients"], RELAY_NAMES.get(r["relay"], r["relay"]), _fmt(r.get("delivered_pct"), "%"),
            f"{_fmt(lag.get('p50'))} / {_fmt(lag.get('p95'))} / {_fmt(lag.get('p99'))} / {_fmt(lag.get('max'))}",
            f"{_fmt(last.get('p50'))} / {_fmt(last.get('p99'))}",
            f"{_fmt(ticks.get('p99'))} / {_fmt(ticks.get('max'))} ({_fmt(r.get('messages_per_client'))} in all)"
            + (f"; per server batch max {r['messages_per_client_per_batch_max']}"
               if r.get("messages_per_client_per_batch_max") is not None else ""),
            f"{_fmt(size.get('mean'))} / {_fmt(size.get('full_mean'))}",
            f"{_fmt(_get(r, 'server_cpu', 'percent_of_core'), '%')} "
            f"(waited {_fmt(_get(r, 'server_cpu', 'waiting_for_cpu_percent'), '%')})",
            _fmt(r.get("client_process_cpu_pct"), "%"),
            _fmt(_get(r, "machine_cpu", "busy_percent_of_all_cores"), "%"),
            f"{r.get('connected')}/{r['clients']} in {_fmt(r.get('connect_s'), ' s')}; {r.get('reconnects')} "
            f"reconnects; {_get(r, 'tasks', 'stopped_by')} after {_fmt(_get(r, 'tasks', 'storm_s'), ' s')}",
        ])
    out += _table(["clients", "relay", "terminal delivered", "lag p50 / p95 / p99 / max ms (all clients)",
                   "last joiner p50 / p99 ms", "messages per client per tick p99 / max",
                   "bytes per progress update: as sent / full object", "server CPU (waiting for a CPU)",
                   "client process CPU (near 100%: the clients are the bottleneck)",
                   "machine busy", "connected; reconnects; storm"], rows)
    split = [r for r in fanout.get("rounds") or [] if r.get("lag_to_first_client_ms")]
    if split:
        out += ["", "### Where the lag goes", "",
                "Each lag in two parts: from the task's `finished` until the FIRST client had its terminal state "
                "(the event's way to the server, the wait for the next push tick, the store, the emit: one value "
                "per task), then from that first client to each other one (the sends to every client, and the one "
                "client process reading them all: one value per client and task). And the time between two "
                f"messages to one client as received: the server sends at most one batch per tick "
                f"({_fmt(_get(split[0], 'messages_per_client_per_tick', 'tick_s'), ' s', 3)}), so a gap under a tick "
                "is jitter, which is what puts two messages in one tick window of the per-tick count.", ""]
        out += _table(["clients", "relay", "finished to the first client p50 / p99 / max ms",
                       "first client to each other p50 / p99 / max ms",
                       "gap between two messages to one client p1 / p10 / p50 ms", "messages per tick window max"],
                      [[r["clients"], RELAY_NAMES.get(r["relay"], r["relay"]),
                        " / ".join(_fmt(_get(r, "lag_to_first_client_ms", k)) for k in ("p50", "p99", "max")),
                        " / ".join(_fmt(_get(r, "lag_after_first_client_ms", k)) for k in ("p50", "p99", "max")),
                        " / ".join(_fmt(_get(r, "message_gap_ms", k)) for k in ("p1", "p10", "p50")),
                        _fmt(_get(r, "messages_per_client_per_tick", "max"))] for r in split])
    floors = [f for f in fanout.get("client_floor") or [] if "lag_ms" in f or "error" in f]
    if floors:
        out += ["", "### The measuring client's floor", "",
                "The same client counts in the same one process receive messages of our rounds' mean size, one "
                "per tick, from a bare Flask-SocketIO server (eventlet) that does nothing else: no Celery events, "
                "no store, no tick to wait for (bench/client_floor.py). Lag = receive time minus emit time. It shows "
                "what the client process alone adds at that size and rate: a reference measured in runs of its "
                "own, not a strict lower bound. It is reported beside ours, not subtracted from it.", ""]
        out += _table(["clients", "message bytes", "lag p50 / p95 / p99 / max ms", "client CPU per message",
                       "client process CPU", "delivered", "messages per tick window max (one sent per tick)"],
                      [[f["clients"], _fmt(f.get("message_bytes")),
                        " / ".join(_fmt(_get(f, "lag_ms", k)) for k in ("p50", "p95", "p99", "max")),
                        _fmt(f.get("client_us_per_message"), " µs"), _fmt(f.get("client_process_cpu_pct"), "%"),
                        _fmt(f.get("delivered_pct"), "%"), _fmt(_get(f, "messages_per_client_per_tick", "max"))]
                       if "lag_ms" in f else [f["clients"], f"failed: {f['error']}", "", "", "", "", ""]
                       for f in floors])
    return out


def _floor_windows(results: dict[str, Any], clients: int) -> str:
    """The client floor's own count at `clients` (a bare server sending one message per tick, never two
    less than a tick apart, counted the same way), beside ours at that client count."""
    top = _get(floor_for(results, clients), "messages_per_client_per_tick", "max")
    if top is None:
        return ""
    return (f"a bare server that sends one message per tick, never two less than a tick apart (the client "
            f"floor), counted the same way at {clients} clients: max {top}")


def floor_for(results: dict[str, Any], clients: int) -> dict[str, Any] | None:
    return next((f for f in _get(results, "fanout", "client_floor") or []
                 if f.get("clients") == clients and "lag_ms" in f), None)


LAUNCH_MODES = ("**open**, as `make run` starts it on loopback (no sign-in, so no rate limit is counted), and "
                "**signed in**, as it faces the internet: each POST carries a Bearer token, and the web looks it up, "
                "counts the user's unfinished tasks and counts both launch rate limits in Redis (set high enough "
                "never to refuse: bench/launch.py SIGNED_ENV).")


def _launch_levels(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(mode, level) for each launch level: "open" ones, then "signed in" ones (bench/launch.py)."""
    launch = results.get("launch") or {}
    return ([("open", level) for level in launch.get("levels") or []]
            + [("signed in", level) for level in launch.get("signed_levels") or []])


def _rounds(level: dict[str, Any], key: str = "ratios") -> str:
    """' (N rounds, each side first in turn: a, b, c)' for a launch level measured in rounds: every
    round's ratio of `key` (the round shown is the one with the median POST/.delay() ratio)."""
    ratios = [r for r in level.get(key) or [] if r is not None]
    if len(ratios) < 2:
        return ""
    shown = ", ".join(_fmt(r, "x", 3) for r in ratios)
    return f" (the median round of {len(ratios)}, each side first in turn: {shown})"


def _medians(level: dict[str, Any], key: str) -> str:
    """' (median of N rounds: a, b, c)' for a ratio taken as its own median over a launch level's rounds."""
    ratios = [r for r in level.get(key) or [] if r is not None]
    if len(ratios) < 2:
        return ""
    return f" (median of {len(ratios)} rounds: {', '.join(_fmt(r, 'x', 3) for r in ratios)})"


def _floor_cell(level: dict[str, Any]) -> str:
    """The launch floor's figures in the same round as the level's shown ones, or "not measured"."""
    floor = level.get("floor")
    if not floor:
        return "not measured"
    statuses = ", ".join(f"{code}: {count}" for code, count in (floor.get("statuses") or {}).items())
    return (f"{_fmt(floor.get('per_second'), '/s')} (p50 / p99 {_fmt(_get(floor, 'latency_ms', 'p50'))} / "
            f"{_fmt(_get(floor, 'latency_ms', 'p99'))} ms; {statuses or 'no answers'}); medians of the rounds: "
            f"{_fmt(level.get('floor_ratio'), 'x', 3)}; {_fmt(level.get('of_floor'), 'x', 3)}")


def _ingest(results: dict[str, Any]) -> list[str]:
    ingest = results.get("ingest") or {}
    if not ingest:
        return []
    cfg = ingest.get("settings") or {}
    out = ["", "## Ingest: events fully applied, both sides counted the same way", "",
           f"Synthetic events PUBLISHed straight to the broker (each task: sent, received, started, "
           f"{cfg.get('progress')} progress, succeeded; results stored in the backend before `task-succeeded`). "
           "Applied: Flower's `flower_events_total` (incremented after Celery's State.event and Flower's search "
           "index took the event in); ours, a task's events once its ending is stored in Redis (the web runs "
           "this step with its backend poll and periodic reconciliation off, so only events reach the store). "
           "Applied/s = events / (last applied - first published). Decoded/s (ours) is the old, flattering count. "
           "Lost before reconciliation: events never applied, counted alike on both sides. After "
           "reconciliation: after a rung with tasks not ended in the store, our web restarts with its "
           "production settings and reconciles from the result backend as its listener connects; then every "
           "one of the rung's tasks is read back through GET /api/tasks (for this step QUERY_SCAN_LIMIT is set "
           "above the history, so the search lists them all); Flower has no reconciliation. Sustained = 0 "
           "lost before reconciliation and everything applied within max(0.5 s, 10% of the publish time) "
           "after the flood. "
           "After the ladder's rungs, finer ones between each side's highest sustained rung and the next it "
           "missed (or above its highest), every side watching each, both started afresh for them (an empty "
           "history, a new Flower) as for the ladder's first rungs (bench.ingest.next_rate).", ""]

    def side(r: dict[str, Any], name: str) -> list[str]:
        v = r.get(name)
        if not v:
            return ["", ""]
        silent = v.get("longest_without_answer_s")
        cell = (f"{_fmt(v['lost_before_reconciliation'])} lost; applied {_fmt(v['applied_per_s'])}/s, "
                f"+{_fmt(v['caught_up_after_flood_s'], ' s')}" + (" **sustained**" if v["sustained"] else "")
                + (f"; no answer for {silent} s" if silent and silent > 1.5 else ""))
        if name == "web":
            tasks = v.get("tasks_after_reconciliation") or {}
            cell += (f"; decoded {_fmt(v.get('decoded_per_s'))}/s; tasks not ended in the store before "
                     f"reconciliation {_fmt(v.get('tasks_not_stored_as_ended_before_reconciliation'))}, SUCCESS in "
                     f"the API after it {tasks.get('success_in_api')}/{tasks.get('total')}"
                     + (f" ({tasks['unlisted']} the API could not list)" if tasks.get("unlisted") else ""))
        else:
            cell += f"; tasks it saw succeed {_fmt(v.get('tasks_succeeded'))}/{_fmt(r.get('tasks'))}"
        waited = _fmt(_get(v, "cpu", "waiting_for_cpu_percent"), "%")
        return [cell, f"{_fmt(v.get('cpu_us_per_event'))} (waited {waited})"]

    together = "Together (both watch the same floods; ours with its backend poll and periodic reconciliation off)"
    for title, key in ((together, "rungs"), ("Ours alone", "web_alone_rungs"),
                       ("Flower alone (another Redis database)", "flower_alone_rungs")):
        rungs = ingest.get(key) or []
        if not rungs:
            continue
        rows = []
        for r in rungs:
            if "achieved_rate" not in r:
                rows.append([_fmt(r.get("target_rate")), r.get("skipped"), "", "", "", "", "", ""])
                continue
            rows.append([_fmt(r["target_rate"]), _fmt(r["achieved_rate"]), _fmt(r["events"]),
                         _fmt(_get(r, "machine_cpu", "busy_percent_of_all_cores"), "%"),
                         *side(r, "web"), *side(r, "flower")])
        out += ["", f"{title}:", ""]
        out += _table(["target /s", "achieved /s", "events", "machine busy", "ours", "ours CPU µs/event",
                       "Flower", "Flower CPU µs/event"], rows)
    return out


def markdown(results: dict[str, Any]) -> str:
    machine = results.get("machine") or {}
    load = machine.get("loadavg_at_start") or [None]
    out = [f"# Load benchmark ({results.get('when')}, {results.get('profile')} run, "
           f"{machine.get('cores')} cores, load average at start {_fmt(load[0], '', 2)}, "
           f"code {results.get('code')})", "",
           "Our web process (`python serve.py`) side by side with Flower, a plain `.delay()`, the naive relay "
           "(`bench/naive_relay.py`: one Socket.IO message per Celery event) and Flask-SocketIO's documented "
           "message-queue pattern (`bench/mq_worker.py`, `bench/mq_relay.py`: the worker emits through Redis), "
           "in the same run on the same Redis. Command: `make bench` (`python -m bench.run`); quick mode "
           "`python -m bench.run --quick`.", "", "## Goals", ""]
    out += _table(["Goal", "Target", "Ours", "Flower / baselines (same run)",
                   "Beside it: the flattering figure (or, where it says so, the one that does not flatter)",
                   "Verdict"], goals(results))

    loads = results.get("machine_load") or {}
    if loads:
        out += ["", "## How loaded the machine was", "",
                "The 1-minute load average as each step started (this benchmark idle) and how busy all cores were "
                "during it (this benchmark included). A load average above about 1 at a step's start means other "
                "work shared the 2 cores: that step's timings are from a loaded machine.", ""]
        out += _table(["step", "load average at start", "all cores busy during", "from a loaded machine"],
                      [[name, _fmt(v.get("loadavg_1m_at_start"), "", 2), _fmt(v.get("busy_percent_of_all_cores"), "%"),
                        "yes" if (v.get("loadavg_1m_at_start") or 0) > 1.0 else "no"] for name, v in loads.items()])

    out += _fanout(results)
    out += _ingest(results)

    levels = _launch_levels(results)
    if levels:
        out += ["", "## Launch throughput at equal concurrency", "",
                "POST /api/tasks from C concurrent aiohttp clients against `steps.delay()` from C threads of one "
                "process (Celery's producer pool), the real worker running what both send (both pay for it; the web "
                "also takes in the events of every task run, either side's). Beside them, with the web open, the "
                "floor of the required stack (bench/launch_floor.py): Flask-SocketIO on eventlet served by "
                "socketio.run, one view that calls `steps.apply_async` (the same app, signals and Redis commands as "
                "`.delay()`), nothing of ours; the same clients POST to it. Only 202 answers count as launches. "
                "Each level runs a few rounds, each side first in turn and after a different side each time "
                "(bench/launch.py ORDERS), the web idle between two sides; the round with the median "
                "POST/`.delay()` ratio is shown, every round's ratios beside it; the floor's two ratios are each "
                "their own median over the rounds. Two ways the web runs: " + LAUNCH_MODES, ""]
        rows = []
        for mode, level in levels:
            post, delay = level.get("post") or {}, level.get("delay") or {}
            rows.append([mode, level["concurrency"], _fmt(post.get("per_second"), "/s"),
                         f"{_fmt(_get(post, 'latency_ms', 'p50'))} / {_fmt(_get(post, 'latency_ms', 'p99'))}",
                         _fmt(_get(post, "web_cpu", "percent_of_core"), "%"), _fmt(delay.get("per_second"), "/s"),
                         f"{_fmt(_get(delay, 'latency_ms', 'p50'))} / {_fmt(_get(delay, 'latency_ms', 'p99'))}",
                         _fmt(level.get("ratio"), "x", 3) + _rounds(level),
                         _floor_cell(level),
                         ", ".join(f"{code}: {count}" for code, count in (post.get("statuses") or {}).items())])
        out += _table(["web", "C", "POST /api/tasks", "p50 / p99 ms", "web CPU", "`.delay()`", "p50 / p99 ms", "ratio",
                       "the floor (bench/launch_floor.py): /s in that round; of `.delay()`; ours of it",
                       "statuses"], rows)

    memory = results.get("memory") or {}
    if memory:
        keys = memory.get("dashboard_keys_bytes") or {}
        out += ["", "## Memory with a full history", "",
                f"{_fmt(_get(memory, 'settings', 'tasks'))} tasks streamed as events "
                f"({_get(memory, 'settings', 'kinds')}) at {_fmt(_get(memory, 'flood', 'rate'))} events/s into a fresh "
                "web process and a fresh Flower. Redis used_memory holds the result backend's entries too (Celery's, "
                "there with or without the dashboard) as well as the dashboard's keys.", ""]
        out += _table(["measure", "ours", "Flower"], [
            ["process RSS before / after (MB)", f"{_fmt(_get(memory, 'before_mb', 'web', 'rss'))} / "
             f"{_fmt(_get(memory, 'web_after_reads_mb', 'rss'))} "
             f"(peak {_fmt(_get(memory, 'after_mb', 'web', 'peak'))})",
             f"{_fmt(_get(memory, 'before_mb', 'flower', 'rss'))} / {_fmt(_get(memory, 'after_mb', 'flower', 'rss'))} "
             f"(peak {_fmt(_get(memory, 'after_mb', 'flower', 'peak'))})"],
            ["Redis used_memory before / after (MB)", f"{_fmt(_get(memory, 'before_mb', 'redis_used_mb'))} / "
             f"{_fmt(_get(memory, 'after_mb', 'redis_used_mb'))}", "the same Redis"],
            ["the dashboard's own keys (MB; bytes per task)", f"{_fmt(memory.get('dashboard_keys_mb'))}; "
             f"{_fmt(memory.get('redis_bytes_per_task'))} ({', '.join(f'{k}: {_fmt(v)}' for k, v in keys.items())})",
             ""],
            ["result backend bytes per task (Celery's, sampled)", _fmt(memory.get("backend_bytes_per_task_sample")),
             "the same"],
            ["process + Redis used_memory (MB)", _fmt(memory.get("ours_total_mb")), _fmt(memory.get("flower_rss_mb"))],
            ["process + redis-server RSS (MB)", _fmt(memory.get("ours_total_rss_mb")),
             _fmt(memory.get("flower_rss_mb"))],
            ["process + the dashboard's keys (MB)", _fmt(memory.get("ours_process_plus_own_keys_mb")), ""],
            ["tasks held / events taken in", _fmt(memory.get("tasks_in_history")),
             f"{_fmt(memory.get('flower_tasks_seen'))} tasks; {_fmt(memory.get('flower_events_seen'))} of "
             f"{_fmt(memory.get('flower_events_expected'))} events"],
            ["settled after the flood", _fmt(memory.get("web_settled_s"), " s"),
             _fmt(memory.get("flower_settled_s"), " s")],
            ["snapshot on connect; GET /api/tasks?limit=50", f"{_get(memory, 'snapshot', 'tasks')} tasks, "
             f"{_fmt(_get(memory, 'snapshot', 'bytes'))} B, {_get(memory, 'snapshot', 'ms')} ms; "
             f"{memory.get('page_50_ms')} ms", ""],
        ])

    cost = results.get("progress_cost") or {}
    if cost:
        out += ["", "## Progress call cost", "",
                "Progress reported on every iteration, on the real bound task object (`tasks.demo.primes` with a "
                f"request pushed, as in a worker); PROGRESS_INTERVAL {cost.get('progress_interval_s')} s. `without` "
                "is the same loop with the progress call removed, timed in pairs of runs back to back (each "
                "pair's first run alternates); the overhead and ns per call are the median over the pairs, "
                "`without` and `with` the medians of each side (CPU time of the loop; the goal rows also give "
                "the same medians on wall-clock time, which counts the task's waits for Redis too). The 2 µs "
                f"body is an inner loop calibrated on this machine ({_fmt(cost.get('body_ns'), ' ns')} measured).", ""]
        bodies = (("demo `primes` task as written in tasks/demo.py", "primes"),
                  ("`progress(self, n, total, \"{} of {} rows\", n, total)` after an add and a multiply", "light"),
                  ("`report = Progress(self, total, message=\"{} of {} rows\")`, then `report(n)` (the README's "
                   "tight loop), after an add and a multiply", "light_reporter"),
                  ("`report = Progress(self, total)`, then `report(n, \"{} of {} rows\", n, total)`, after an add "
                   "and a multiply", "light_reporter_args"),
                  ("the floor: an empty function with progress()'s arguments, same loop", "light_floor"),
                  ("the reporter's floor: an empty function with one argument, same loop", "light_floor1"),
                  ("`progress(...)` on the ~2 µs body", "body_2us"),
                  ("`Progress` reporter, `report(n)`, on the ~2 µs body", "body_2us_reporter"),
                  ("`Progress` reporter, `report(n, \"{} of {} rows\", n, total)`, on the ~2 µs body",
                   "body_2us_reporter_args"),
                  ("the floor on the ~2 µs body: the empty function", "body_2us_floor"),
                  ("the reporter's floor on the ~2 µs body: the empty function with one argument", "body_2us_floor1"),
                  ("`progress(...)` on the ~2 µs body with an f-string message, as the README's first example "
                   "(the caller formats it on every call)", "body_2us_fstring"))
        out += _table(["loop", "calls", "without (s)", "with (s)", "overhead", "ns per call", "reports sent",
                       "of them stored", "CPU ms per report sent", "final value stored"],
                      [[label,
                        _fmt(v.get("calls")) + (f" x {v.get('pairs')} slices" if key.startswith("body_2us") else ""),
                        v.get("without_s"), v.get("with_s"),
                        _fmt(v.get("overhead_percent"), "%"), v.get("ns_per_call"), v.get("reports_sent"),
                        _or_na(v.get("reports_stored")), _fmt(v.get("cpu_ms_per_report"), "", 2),
                        _or_na(v.get("final_value_stored"))]
                       for label, key in bodies if (v := cost.get(key))])
        out += ["", "On the ~2 µs body the loop is one long loop cut in slices of about one PROGRESS_INTERVAL, each "
                "timed back to back with a slice of the loop without the call (this machine's speed drifts by "
                "several per cent from one second to the next; one-second runs gave -9% to +48% for one call); "
                "`without` and `with` are then one slice's seconds, and the reporters are kept across the slices as "
                "one reporter serves a whole loop (the final value is checked in the light loops). There the "
                "throttles read the loop's own time (bench.progress_cost.LoopClock: the slices without the call do "
                "not count), so reports go out at one per PROGRESS_INTERVAL of the loop with the call, as in one "
                "unbroken loop.", "",
                "ns per call = (with - without) / calls: the skipped calls and the reports sent together. A sent "
                "report (a `task-progress` event and the revocation check; the PROGRESS state stored for the first, "
                "the final value and one per PROGRESS_STORE_INTERVAL in between) costs the CPU ms shown on average; "
                "at most one per PROGRESS_INTERVAL. The runs are CPU time on a shared virtual machine: the "
                "same loop varies by several per cent from run to run, so an overhead within a few points of the "
                "floor's is within the noise."]
        blocks = cost.get("blocks") or {}
        if blocks:
            out += ["", "The goal rows' figures (bench.progress_cost.blocked): the same loops on the ~2 µs body in "
                    f"blocks of {_fmt(next(iter(blocks.values())).get('block'))} iterations (about a millisecond), "
                    "each timed back to back with a block without the call (the first of each pair alternates), "
                    f"for {_fmt(next(iter(blocks.values())).get('seconds'))} s per loop. The overhead is the ratio "
                    "of sums over every pair, reports, ticks and clock reads included (sum with / sum without - "
                    "1), with its 95% interval from the pairs' spread (the delta method). Two blocks a millisecond "
                    "apart run at the same machine speed; two 0.1 s slices often do not (above). Beside it, for "
                    "reading only: the median pair whose block sent no report (what a skipped call costs), and the "
                    "reports' own time, measured around each send, as a share of the loop's time.", ""]
            names = {"body_2us": "`progress(...)`", "body_2us_reporter": "`report(n)`",
                     "body_2us_reporter_args": "`report(n, \"{} of {} rows\", n, total)`",
                     "body_2us_floor": "the empty function with progress()'s arguments",
                     "body_2us_floor1": "the empty function with one argument"}
            out += _table(["loop on the ~2 µs body", "pairs (with a report)", "overhead, CPU (95% interval)",
                           "overhead, wall clock (95% interval)", "median pair without a report",
                           "reports sent: CPU ms each, share"],
                          [[names.get(key, key), f"{_fmt(b.get('pairs'))} ({_fmt(b.get('pairs_with_a_report'))})",
                            f"{_fmt(b.get('overhead_percent'), '%')} ({_span(b.get('interval_percent'))})",
                            f"{_fmt(_get(b, 'wall', 'overhead_percent'), '%')} "
                            f"({_span(_get(b, 'wall', 'interval_percent'))})",
                            _fmt(b.get("skipped_calls_percent"), "%"),
                            f"{_fmt(b.get('reports_sent'))}: {_fmt(b.get('ms_per_report'), '', 2)}, "
                            f"{_fmt(b.get('reports_percent'), '%')}"]
                           for key, b in blocks.items()])

    latency = results.get("latency") or {}
    if latency:
        out += ["", "## Idle latency: a worker's progress call to a connected client (ms)", "",
                "Real worker tasks one after another, one python-socketio client.", ""]
        rows = []
        for regime in latency.get("regimes") or []:
            cfg = regime["settings"]
            for name in ("ours", "naive", "mq"):
                v = regime.get(name) or {}
                rows.append([f"{cfg['name']} ({cfg['tasks']} tasks x {cfg['steps']} steps, {cfg['delay']} s apart)",
                             RELAY_NAMES[name], v.get("n"), v.get("p50"), v.get("p95"), v.get("p99"), v.get("max")])
        out += _table(["regime", "relay", "samples", "p50", "p95", "p99", "max"], rows)

    for name, prof in (results.get("profiles") or {}).items():
        if "samples" not in prof:
            continue
        out += ["", f"## Profile: {name} (py-spy, {prof['samples']} samples, {prof['file']})", ""]
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
    """Lag over all clients and for the last joiner, and terminal states delivered, per relay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lag_ax, share_ax) = plt.subplots(1, 2, figsize=(13, 5))
    colors = {"ours": "tab:blue", "naive": "tab:red", "mq": "tab:orange"}
    counts: set[int] = set()
    for relay, color in colors.items():
        data = sorted(rounds(results, relay), key=lambda r: r["clients"])
        for key, style, what in (("lag_ms", "-", "all clients p99"), ("last_joiner_lag_ms", ":", "last joiner p99")):
            points = [(r["clients"], max(1, _get(r, key, "p99"))) for r in data if _get(r, key, "p99") is not None]
            if points:
                counts.update(x for x, _ in points)
                lag_ax.plot(*zip(*points, strict=True), linestyle=style, marker="o", color=color,
                            label=f"{RELAY_NAMES[relay]}, {what}")
        if data:
            share_ax.plot([r["clients"] for r in data], [r.get("delivered_pct") or 0 for r in data], "-", marker="o",
                          color=color, label=RELAY_NAMES[relay])
    for clients, target in ((500, 200), (1000, 1000)):
        lag_ax.plot([clients], [target], marker="_", markersize=24, markeredgewidth=2, color="black", linestyle="")
    lag_ax.plot([], [], marker="_", linestyle="", color="black", markersize=12, label="goal: p99 at 500 / 1,000")
    ticks = sorted(counts)
    for ax in (lag_ax, share_ax):
        ax.set_xscale("log")
        if ticks:
            ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.grid(True, which="both", alpha=0.3)
    lag_ax.set(yscale="log", xlabel="connected clients", ylabel="terminal-state lag p99 (ms)",
               title="Lag of a storm's terminal states")
    lag_ax.legend(fontsize=7, handlelength=3.5)
    share_ax.set(ylim=(-2, 105), xlabel="connected clients", ylabel="terminal states delivered (%)",
                 title="Terminal states delivered (within the timeout)")
    share_ax.legend(fontsize=8)
    fig.text(0.01, 0.01, f"{results.get('when')}, {(results.get('machine') or {}).get('cores')} cores shared by "
             "server, Redis, worker and the client process", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def missing_numbers(results: dict[str, Any]) -> list[str]:
    """The steps that produced no numbers (what --quick checks), each named by its step first."""
    checks = {
        "latency": _get(results, "latency", "regimes", 0, "ours", "p50") is not None,
        "latency (baselines)": all(_get(results, "latency", "regimes", 0, n, "p50") is not None
                                   for n in ("naive", "mq")),
        "fanout": bool(rounds(results, "ours")) and all(_get(r, "lag_ms", "p50") is not None
                                                        for r in rounds(results, "ours")),
        "fanout (baselines)": bool(rounds(results, "naive")) and bool(rounds(results, "mq")),
        "fanout (collector on)": bool(rounds(results, "ours-collector")),
        "fanout (client floor)": any("lag_ms" in f for f in _get(results, "fanout", "client_floor") or []),
        "progress_cost": _get(results, "progress_cost", "body_2us", "overhead_percent") is not None
        and _get(results, "progress_cost", "body_2us_reporter", "overhead_percent") is not None,
        "launch": bool(_get(results, "launch", "levels"))
        and all(_get(v, "post", "per_second") and _get(v, "delay", "per_second")
                for v in _get(results, "launch", "levels")),
        "launch (signed in)": bool(_get(results, "launch", "signed_levels"))
        and all(_get(v, "post", "per_second") and _get(v, "delay", "per_second")
                and {str(k) for k in _get(v, "post", "statuses") or {}} == {"202"}
                for v in _get(results, "launch", "signed_levels")),
        "ingest": _get(results, "ingest", "rungs", 0, "web", "events_decoded") is not None
        and _get(results, "ingest", "web_peak_applied_per_s") is not None,
        "ingest (flower)": _get(results, "ingest", "rungs", 0, "flower", "events_applied") is not None,
        "ingest (alone)": _get(results, "ingest", "web_alone_rungs", 0, "web", "events_decoded") is not None
        and _get(results, "ingest", "flower_alone_rungs", 0, "flower", "events_applied") is not None,
        "memory": _get(results, "memory", "ours_total_mb") is not None and _get(results, "memory", "flower_rss_mb"),
    }
    return [name for name, value in checks.items() if not value]
