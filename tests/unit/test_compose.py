"""docker-compose.yml follows the Compose specification and runs the Procfile's processes."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def compose_command(service: dict[str, Any]) -> str:
    """The command line a service runs, as the Procfile writes it.

    A command Compose must not interpolate runs as `sh -c <line>` with every `$` escaped as `$$`,
    so that the container's shell expands it exactly as the Procfile's shell does.
    """
    command = service["command"]
    if isinstance(command, list):
        assert command[:2] == ["sh", "-c"] and len(command) == 3, command
        return command[2].replace("$$", "$")
    return command


def test_compose_file_matches_the_compose_specification_schema() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
         str(ROOT / "docker-compose.yml")],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_each_procfile_process_with_the_same_command() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    processes = procfile()
    assert set(processes) == {"web", "worker", "flower"}
    assert set(compose) - {"redis"} == set(processes)
    for name, command in processes.items():
        assert compose_command(compose[name]) == command, name


def test_worker_and_flower_serve_the_first_app_of_celery_app() -> None:
    processes = procfile()
    assert "${CELERY_APP:-tasks.celery_app}" in processes["worker"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("web", "worker", "flower"):  # the same variable reaches every process
        assert compose[name]["environment"]["CELERY_APP"] == "${CELERY_APP:-tasks.celery_app}"
    for value, first in [("", "tasks.celery_app"), ("mytasks", "mytasks"), ("mytasks:app,other", "mytasks:app")]:
        line = processes["worker"].replace("exec celery", "echo")  # the shell's expansion, not a worker
        env = {"PATH": "/usr/bin:/bin", "WORKER_CONCURRENCY": "2"} | ({"CELERY_APP": value} if value else {})
        out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, env=env, check=True).stdout
        assert out.split()[:2] == ["-A", first], out
        assert "--concurrency=2" in out


def test_redis_has_a_health_check_the_others_wait_for() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert compose["redis"]["healthcheck"]["test"]
    for name in ("web", "worker", "flower"):
        assert compose[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert compose[name]["environment"]["REDIS_URL"].startswith("redis://redis:")


def test_every_environment_variable_the_code_reads_is_documented() -> None:
    documented = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()
                  if "=" in line and not line.startswith("#")}
    sources = [*ROOT.glob("celery_dashboard/*.py"), *ROOT.glob("tasks/*.py"), *ROOT.glob("web/*.py"),
               ROOT / "serve.py", ROOT / "Procfile"]
    pattern = re.compile(r'(?:environ\.get\(|_int\(|_float\(|\bnumber\(|\$\{)"?([A-Z][A-Z0-9_]+)')
    read = {name for path in sources for name in pattern.findall(path.read_text())}
    assert {"REDIS_URL", "SECRET_KEY", "PORT", "WORKER_CONCURRENCY"} <= read  # the scan works
    read -= {"DYNO"}  # set by Heroku, not by the operator
    assert read <= documented, read - documented
