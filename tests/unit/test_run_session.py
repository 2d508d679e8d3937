"""scripts/run_session.py waits for every process it started to be really gone, ports closed."""
from __future__ import annotations

import importlib.util
import platform
import socket
import subprocess
import sys
import time

import psutil
import pytest

from tests.support import ROOT

spec = importlib.util.spec_from_file_location("run_session", ROOT / "scripts" / "run_session.py")
run_session = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_session)

# A process listening on a port whose main thread ends alone (the exit system call, not exit_group,
# as any thread ends) while another thread still sleeps: the kernel shows the process a zombie, and
# its port still answers until that thread has ended.
MAIN_THREAD_ENDS_FIRST = """
import ctypes, socket, sys, threading, time
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
print(server.getsockname()[1], flush=True)
threading.Thread(target=time.sleep, args=(float(sys.argv[1]),)).start()
ctypes.CDLL(None).syscall(60, 0)  # SYS_exit on x86_64: this thread only
"""


def answers(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(platform.machine() != "x86_64" or not sys.platform.startswith("linux"),
                    reason="calls Linux's exit system call by its x86_64 number")
def test_a_zombie_whose_threads_still_hold_its_port_is_still_running() -> None:
    child = subprocess.Popen([sys.executable, "-c", MAIN_THREAD_ENDS_FIRST, "2"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(child.stdout.readline())
        session = run_session.Session(["unused"])
        session.known = {child.pid: psutil.Process(child.pid)}
        deadline = time.monotonic() + 5
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.01)
        assert psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE
        assert answers(port)
        assert session.alive()  # make run would have returned here, its port still taken
        deadline = time.monotonic() + 10
        while session.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not session.alive()
        assert not answers(port)
    finally:
        child.kill()
        child.wait(5)
        child.stdout.close()
