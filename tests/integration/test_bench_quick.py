"""`make bench`'s harness runs end to end: `python -m bench.run --quick` (small sizes; its own Redis,
worker, web processes and Flower on free ports) exits 0 only when every step produced numbers, and
writes its report. Its figures are not checked: beside the other tests they measure a shared machine
(and speed is never asserted in tests). It runs here, in one of make test's processes beside the
other test files, rather than after them: 150 s of make test's wall time otherwise."""
from __future__ import annotations

import json
import subprocess
import time

from bench import report
from bench.common import RESULTS
from tests.conftest import ARTIFACTS
from tests.support import BIN, ROOT


def test_the_benchmark_harness_runs_every_step_and_writes_its_report() -> None:
    started = time.time()
    done = subprocess.run([str(BIN / "python"), "-m", "bench.run", "--quick"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    (ARTIFACTS / "bench-quick.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    written = RESULTS / "quick" / "report.json"
    assert written.stat().st_mtime >= started  # this run's report, not an old one
    results = json.loads(written.read_text())
    assert report.missing_numbers(results) == [] and not results["errors"]
    assert (RESULTS / "quick" / "report.md").read_text().startswith("# Load benchmark")
