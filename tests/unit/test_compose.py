"""docker-compose.yml (and its Dockerfile) follows the Compose specification, is read by the Compose
CLIs Debian ships, runs the Procfile's processes, publishes on loopback and carries no secret."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# Debian 13's Compose v2, unpacked here by scripts/ensure-compose (run by `make test`) on Debian 12.
V2 = ROOT / ".venv" / "compose-v2" / "docker-compose"
# Variables of .env.example that compose does not pass on from .env, and why.
WITHHELD = {
    "HOST": "set to the container's interface, so that sign-in is always on",
    "AUTH_REQUIRED": "sign-in is always on under compose",
    "PORT": "set: the container's port",
    "FLOWER_PORT": "set: the container's port",
    "FLOWER_ADDRESS": "Flower listens on the container's interface",
    "REDIS_URL": "set: the compose Redis",
    "BIND_ADDRESS": "read by Compose itself, for the published ports",
    "FLOWER_EMBED": "compose runs Flower as its own service",
}


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


def compose_file() -> dict[str, Any]:
    """docker-compose.yml as YAML, before Compose interpolates it."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def with_defaults(text: str) -> str:
    """`text` as Compose interpolates it when no variable is set (`${X:-default}` -> default)."""
    return re.sub(r"\$\{[A-Z_]+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", text)


def published(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host address, host port) of each published port, from v1's short or v2's long syntax."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append((port.get("host_ip", ""), str(port["published"])))
        else:
            parts = str(port).split(":")
            ports.append((parts[0] if len(parts) == 3 else "", parts[-2]))
    return ports


def test_no_string_in_the_repository_signs_sessions_under_compose() -> None:
    for name, service in compose_file()["services"].items():
        assert service.get("environment", {}).get("SECRET_KEY") in (None, "${SECRET_KEY}", "${SECRET_KEY:-}"), name
    assert "SECRET_KEY" not in (ROOT / "Dockerfile").read_text()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()  # a developer's .env is not baked in


def test_every_published_port_is_bound_to_loopback_unless_bind_address_is_set() -> None:
    services = compose_file()["services"]
    ports = {name: service.get("ports", []) for name, service in services.items()}
    assert ports["web"] and ports["flower"] and not ports["redis"]
    for name, entries in ports.items():
        for port in entries:
            assert isinstance(port, str) and port.startswith("${BIND_ADDRESS:-127.0.0.1}:"), (name, port)
            assert with_defaults(port).startswith("127.0.0.1:"), (name, port)


def test_every_service_runs_under_an_init_that_passes_sigterm_on() -> None:
    for name, service in compose_file()["services"].items():
        assert service.get("init") is True, name
        assert service.get("stop_signal", "SIGTERM") == "SIGTERM", name


def test_every_setting_of_env_example_reaches_the_processes_or_is_withheld_on_purpose() -> None:
    documented = {m.group(1) for m in re.finditer(r"^# ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M)}
    documented |= {m.group(1) for m in re.finditer(r"^([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M)}
    assert {"SECRET_KEY", "PYTHONPATH", "LAUNCH_LIMIT", "BIND_ADDRESS"} <= documented  # the scan works
    passed_to_any = set()
    for name in ("web", "worker", "flower"):
        environment = compose_file()["services"][name]["environment"]
        passed = {key for key, value in environment.items() if value is None or f"${{{key}" in str(value)}
        assert not passed & set(WITHHELD), name
        assert environment["HOST"] == "0.0.0.0"
        passed_to_any |= passed
    assert documented - passed_to_any - set(WITHHELD) == set()


def test_the_readme_first_account_command_is_one_the_compose_service_and_the_cli_accept() -> None:
    from web.cli import users

    readme = (ROOT / "README.md").read_text()
    command = re.search(r"docker compose run --rm (\w+) flask --app web users (add [\w-]+(?: --[\w-]+ [\w-]+)*)",
                        readme)
    assert command, "README shows the first-account command for compose"
    service, args = command.group(1), command.group(2).split()
    assert service in compose_file()["services"]
    assert command.group(0) in (ROOT / "docker-compose.yml").read_text()
    ctx = users.make_context("users", list(args), resilient_parsing=False)
    name, add, rest = users.resolve_command(ctx, args)
    params = add.make_context(name, rest).params  # parses and checks the role without running
    assert params["role"] == "admin"


def compose_cli(version: str) -> list[str]:
    """The command of a real Compose CLI of that major version, or fail saying how to get it."""
    system = shutil.which("docker-compose")
    system_version = ""
    if system:
        system_version = subprocess.run([system, "version", "--short"], capture_output=True, text=True).stdout
    if version == "1":
        if system_version.startswith("2"):
            pytest.skip("this Debian ships Compose v2 only (Debian 13 and later)")
        if system_version.startswith("1"):
            return [system]
    else:
        if V2.exists():
            return [str(V2)]
        if system_version.startswith("2"):
            return [system]
    pytest.fail(f"no Compose v{version} CLI: run scripts/ensure-compose (make test does)")


def compose_config(cli: list[str], env_file: Path, settings: str) -> subprocess.CompletedProcess[str]:
    """`<cli> config` of docker-compose.yml with only `settings` in the .env Compose reads."""
    env_file.write_text(settings)
    return subprocess.run([*cli, "--file", str(ROOT / "docker-compose.yml"), "--env-file", str(env_file), "config"],
                          capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(env_file.parent)})


@pytest.mark.parametrize("version", ["1", "2"])
def test_the_compose_clis_debian_ships_run_the_file_as_intended(version: str, tmp_path: Path) -> None:
    cli = compose_cli(version)
    result = compose_config(cli, tmp_path / ".env", "FLOWER_BASIC_AUTH=admin:pw\nLAUNCH_LIMIT=5/minute\n"
                            "AUTH_REQUIRED=0\nHOST=127.0.0.1\n")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == {"redis", "web", "worker", "flower"}
    assert all(service.get("init") is True for service in services.values())
    assert published(services["web"]) == [("127.0.0.1", "5000")]
    assert published(services["flower"]) == [("127.0.0.1", "5555")]
    for name in ("web", "worker", "flower"):
        environment = services[name]["environment"]
        assert environment.get("SECRET_KEY") is None, name  # unset: the web process makes one, kept in Redis
        assert environment["LAUNCH_LIMIT"] == "5/minute"  # a setting in .env reaches the processes
        assert environment.get("MAX_CONNECTIONS") is None  # an unset one stays unset: the default applies
        assert environment["HOST"] == "0.0.0.0" and "AUTH_REQUIRED" not in environment  # sign-in stays on
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] == "admin:pw"

    opted_in = compose_config(cli, tmp_path / ".env", "FLOWER_BASIC_AUTH=admin:pw\nBIND_ADDRESS=0.0.0.0\n")
    assert opted_in.returncode == 0, opted_in.stderr
    services = yaml.safe_load(opted_in.stdout)["services"]
    assert published(services["web"]) == [("0.0.0.0", "5000")]
    assert published(services["flower"]) == [("0.0.0.0", "5555")]

    no_flower_password = compose_config(cli, tmp_path / ".env", "")
    assert no_flower_password.returncode != 0
    assert "set FLOWER_BASIC_AUTH=user:password in .env" in no_flower_password.stderr
