"""Debian's Chromium and the flags it runs with here (DESIGN.md): browser tests, benchmarks, screenshots."""

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
