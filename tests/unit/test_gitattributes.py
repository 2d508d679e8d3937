"""A checkout with Git for Windows' default (core.autocrlf=true) keeps LF line endings (.gitattributes):
scripts, Makefile, .ci/run and Procfile run as they are, every other text file is LF too."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

# What a Windows checkout must be able to run (and their bash syntax checked).
RUN_AS_THEY_ARE = ["Makefile", "Procfile", ".ci/run", *sorted(f"scripts/{p.name}" for p in (ROOT / "scripts").iterdir()
                                                           if p.is_file() and not p.name.endswith(".pyc"))]
BINARY_SUFFIXES = {".png", ".ico", ".jpg", ".gif", ".woff", ".woff2"}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=60).stdout


@pytest.fixture(scope="module")
def windows_checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone made with core.autocrlf=true of the project as it stands in the work tree: HEAD plus
    the work tree's .gitattributes and the files checked here, committed in a scratch copy (so the
    test checks what is about to be committed, and writes nothing into this repository)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and the project's repository")
    base = tmp_path_factory.mktemp("checkout")
    snapshot, clone = base / "snapshot", base / "windows"
    git("clone", "-q", "--depth", "1", f"file://{ROOT}", str(snapshot), cwd=base)
    for name in [".gitattributes", *RUN_AS_THEY_ARE]:
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    git("add", "-A", cwd=snapshot)
    git("-c", "user.name=test", "-c", "user.email=test@example.invalid", "commit", "-q", "--allow-empty",
        "-m", "work tree as it stands", cwd=snapshot)
    git("clone", "-q", "-c", "core.autocrlf=true", str(snapshot), str(clone), cwd=base)
    assert git("config", "core.autocrlf", cwd=clone).strip() == "true"
    return clone


def test_scripts_makefile_and_procfile_keep_lf_and_parse(windows_checkout: Path) -> None:
    for name in RUN_AS_THEY_ARE:
        content = (windows_checkout / name).read_bytes()
        assert b"\r" not in content, f"{name} has CR line endings in a core.autocrlf=true checkout"
        if content.startswith(b"#!") and b"bash" in content.splitlines()[0]:
            result = subprocess.run(["bash", "-n", name], cwd=windows_checkout, capture_output=True, text=True)
            assert result.returncode == 0, f"bash -n {name}: {result.stderr}"


def test_the_checkout_runs_its_makefile_and_a_script(windows_checkout: Path) -> None:
    # Executed, not only parsed: a `bash\r` shebang fails here ("No such file or directory").
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    ran = subprocess.run(["make", "check-python", f"PYTHON={sys.executable}", "VENV=no-venv"], cwd=windows_checkout,
                         env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_every_text_file_is_lf(windows_checkout: Path) -> None:
    with_cr = [name for name in git("ls-files", cwd=windows_checkout).splitlines()
               if Path(name).suffix not in BINARY_SUFFIXES and b"\r" in (windows_checkout / name).read_bytes()]
    assert not with_cr, f"CR line endings in a core.autocrlf=true checkout: {with_cr}"
