"""The load benchmark: our web process side by side with Flower, a plain `.delay()` and two baseline
relays (a naive one, and Flask-SocketIO's documented message-queue pattern), in one run.

    python -m bench.run            # full run, about 12 minutes on a 2-core machine (make bench)
    python -m bench.run --quick    # CI, about 150 s: small sizes; checks that every step ran and
                                   # produced numbers (exit status 1 if not), not timings;
                                   # writes under bench/results/quick/

One module per measurement, each a `measure(run)` (bench.idle, bench.relays with bench.fanout,
bench.progress_cost, bench.launch, bench.ingest, bench.memory); bench.harness holds what they share
and devstack starts the real processes; bench.report writes report.md, report.json and report.png
in bench/results/. Exits 1 if a step produced no numbers.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bench import idle, ingest, launch, memory, progress_cost, relays, report
from bench.common import RESULTS, write_json
from bench.harness import Run, code_version, log

PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "budget_s": 1500,
        "latency": [{"name": "every 250 ms", "tasks": 4, "steps": 12, "delay": 0.25},
                    {"name": "at the throttle's top rate", "tasks": 4, "steps": 20, "delay": 0.1}],
        "fanout": {"clients": [1, 100, 500, 1000], "baseline_clients": [1, 100, 500, 1000],
                   "collector_on_clients": [500, 1000], "tasks": 40, "steps": 250, "timeout_s": 30, "reserve_s": 350},
        "progress_cost": {"calls": 1_000_000, "repeats": 3},
        "launch": {"concurrency": [1, 8], "requests": 1500, "deadline_s": 20, "rounds": 3},
        # Each ladder stops climbing after a rung where every side lost events.
        # Rungs 2,500 apart up to 15,000: "sustained" is the highest rung with nothing lost or late, and
        # with rungs a factor of 2 apart a ratio of two sides' rungs could only be 1x or 2x. Then `refine`
        # rounds of rungs between each side's highest sustained rate and the next rung it missed (or 1.25x
        # above its highest, when it missed none), down to `refine_step` apart (bench.ingest.next_rate):
        # the verdict holds only where the rungs each side missed still give 2x (report._bounded_ratio).
        "ingest": {"rates": [2500, 5000, 7500, 10000, 12500, 15000, 20000, 30000, 0],
                   "web_alone": [5000, 7500, 10000, 12500, 15000, 20000],
                   "flower_alone": [2500, 5000, 7500, 10000, 12500, 15000], "seconds": 4, "max_events": 160_000,
                   "progress": 10, "reserve_s": 150, "profile_rate": 10000, "refine": 3, "refine_step": 500},
        "memory": {"tasks": 100_000, "rate": 4_000, "settle_s": 120},
    },
    "quick": {
        "budget_s": 300,
        "latency": [{"name": "at the throttle's top rate", "tasks": 1, "steps": 5, "delay": 0.1}],
        "fanout": {"clients": [20], "baseline_clients": [20], "collector_on_clients": [20], "tasks": 4, "steps": 20,
                   "history": 20,
                   "timeout_s": 15, "reserve_s": 60},
        "progress_cost": {"calls": 100_000, "repeats": 1},
        "launch": {"concurrency": [1, 4], "signed_concurrency": [1], "requests": 60, "deadline_s": 8},
        "ingest": {"rates": [5000], "web_alone": [5000], "flower_alone": [2500], "seconds": 1,
                   "max_events": 10_000, "progress": 10, "reserve_s": 25},
        "memory": {"tasks": 1_000, "rate": 10_000, "settle_s": 30},
    },
}

# In this order: the steps that need the real worker first; from `launch` on, the load is synthetic.
STEPS: dict[str, Callable[[Run], Any]] = {
    "latency": idle.measure, "fanout": relays.measure, "progress_cost": progress_cost.step,
    "launch": launch.measure, "ingest": ingest.measure, "memory": memory.measure,
}


def run_all(run: Run, only: set[str] | None) -> int:
    run.results["when"] = datetime.now().isoformat(timespec="seconds")
    run.results["machine"] = {"cores": os.cpu_count(), "loadavg_at_start": os.getloadavg()}
    run.results["code"] = code_version()
    try:
        run.step("setup", lambda r: r.start())
        if "setup" not in run.errors:
            for name, fn in STEPS.items():
                if only is None or name in only:
                    run.step(name, fn)
    finally:
        run.stop()
    run.results["machine"]["loadavg_at_end"] = os.getloadavg()
    if run.profiles:
        run.results["profiles"] = run.profiles
    run.results["errors"] = run.errors
    run.results["timings_s"] = run.timings
    run.results["total_s"] = round(sum(run.timings.values()), 1)
    write_json(run.out / "report.json", run.results)
    markdown = report.markdown(run.results)
    (run.out / "report.md").write_text(markdown)
    try:
        report.plot(run.results, run.out / "report.png")
    except Exception as exc:  # noqa: BLE001 - the numbers matter more than the picture
        run.errors["plot"] = repr(exc)
    print(markdown)
    missing = [m for m in report.missing_numbers(run.results) if only is None or m.split(" ")[0] in only]
    if missing or run.errors:
        log(f"incomplete: errors {run.errors}, no numbers for {missing}")
        return 1
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small and fast, for CI: checks that it runs")
    parser.add_argument("--only", help=f"development: run only these steps (comma-separated: {', '.join(STEPS)})")
    parser.add_argument("--clients", help="development: fan-out client counts (comma-separated)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the web process with py-spy during the largest fan-out, the 20,000 events/s "
                             "ingest and the launch load (adds load: keep it out of the reference run)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard or soft < hard < 4096:  # 1,000 websockets on each side need the descriptors
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "quick" if args.quick else "full"
    profile = PROFILES[name]
    if args.clients:
        profile["fanout"]["clients"] = profile["fanout"]["baseline_clients"] = [int(n) for n in args.clients.split(",")]
        profile["fanout"]["collector_on_clients"] = profile["fanout"]["clients"][-1:]
    run = Run(name, profile)
    run.profile = args.profile
    only = set(args.only.split(",")) if args.only else None
    unknown = (only or set()) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps: {sorted(unknown)}")
    sys.exit(run_all(run, only))


if __name__ == "__main__":
    main()
