"""The make targets check the Python version first (Makefile, scripts/check-python): one sentence naming
the version needed and the PYTHON setting, before any virtualenv is made. Real interpreters from pyenv."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT

PYENV = Path("/root/.pyenv/versions")
# make's own variables from an outer `make test` would reach the inner make.
MAKE_VARIABLES = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")


def interpreter(version: str) -> Path:
    found = sorted(PYENV.glob(f"{version}.*/bin/python3"))
    if not found:
        pytest.skip(f"no Python {version} interpreter under {PYENV} to test the version check with")
    return found[-1]


def make(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in MAKE_VARIABLES}
    return subprocess.run(["make", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("target", ["setup", "run", "test"])
def test_python_3_10_is_refused_in_one_sentence_before_anything_is_made(target: str, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    result = make(target, f"PYTHON={interpreter('3.10')}", f"VENV={venv}")
    assert result.returncode != 0
    said = [line for line in result.stderr.splitlines() if not line.startswith("make: ")]
    assert len(said) == 1, result.stderr
    assert "needs Python 3.11 or newer" in said[0] and "is Python 3.10" in said[0], said
    assert "PYTHON=" in said[0], said  # how to point make at another interpreter
    assert "Traceback" not in result.stdout + result.stderr
    assert "pip" not in result.stdout, result.stdout  # nothing ran before the check
    assert not venv.exists()


def test_a_virtualenv_made_with_an_older_python_is_named_with_how_to_remove_it(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([str(interpreter("3.10")), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    result = make("setup", f"PYTHON={interpreter('3.11')}", f"VENV={venv}")
    assert result.returncode != 0
    said = [line for line in result.stderr.splitlines() if not line.startswith("make: ")]
    assert len(said) == 1 and f"{venv} was made with Python 3.10" in said[0] and "make clean" in said[0], said


def test_a_missing_interpreter_is_named(tmp_path: Path) -> None:
    result = make("setup", "PYTHON=python3.99-not-here", f"VENV={tmp_path / 'venv'}")
    assert result.returncode != 0
    said = [line for line in result.stderr.splitlines() if not line.startswith("make: ")]
    assert len(said) == 1 and "PYTHON=python3.99-not-here was not found" in said[0], said


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13"])
def test_python_3_11_and_newer_pass_the_check(version: str, tmp_path: Path) -> None:
    result = make("check-python", f"PYTHON={interpreter(version)}", f"VENV={tmp_path / 'venv'}")
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""
