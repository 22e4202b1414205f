"""``python -m controlplane.serve``: several daphne processes on one port (issue #20), each of
which serves it alone, a dead one replaced, all stopped by SIGTERM; a bad count refused."""
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import requests

from tests.fixtures.agents import wait_for
from tests.fixtures.servers import REPO_ROOT, _answers_http, free_port, start_process

pytestmark = pytest.mark.django_db(transaction=True)


def servers(parent: psutil.Process) -> list[psutil.Process]:
    """The live daphne children of ``parent`` (a dead one not yet reaped is not one)."""
    found = []
    for child in parent.children():
        try:
            if "daphne" in " ".join(child.cmdline()):
                found.append(child)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            pass
    return found


def listens_on(process: psutil.Process, port: int) -> bool:
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
               for c in process.net_connections(kind="tcp"))


def test_processes_share_the_port_each_serves_it_alone_and_a_dead_one_is_replaced(
        subprocess_env, collected_static, tmp_path, owner, api):
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/v1/experiments/"
    serve = start_process("serve", [sys.executable, "-m", "controlplane.serve", "--port",
                                    str(port), "--processes", "2"], subprocess_env, tmp_path,
                          ready=_answers_http(url), timeout_s=120)
    try:
        parent = psutil.Process(serve.popen.pid)
        wait_for(lambda: len(servers(parent)) == 2, 60, "two server processes")
        first, second = servers(parent)
        assert listens_on(first, port) and listens_on(second, port)
        wait_for(lambda: all(_answers_http(url)(serve) for _ in range(4)), 120,
                 "both processes loaded")

        def answers() -> bool:  # a new connection each time: any process may take it
            response = requests.get(url, headers={"Authorization": f"Token {owner.api_token}"},
                                    timeout=30)
            return response.status_code == 200 and response.json()["count"] == 0

        for stopped in (first, second):  # the other one alone takes every connection
            stopped.suspend()
            try:
                assert all(answers() for _ in range(5))
            finally:
                stopped.resume()

        first.kill()
        wait_for(lambda: len(servers(parent)) == 2 and first.pid not in
                 {p.pid for p in servers(parent)}, 60, "a new process in place of the dead one")
        assert answers()
    finally:
        serve.popen.send_signal(signal.SIGTERM)
        serve.popen.wait(60)
    assert serve.popen.returncode == 0
    assert not psutil.pid_exists(second.pid) or second.status() == psutil.STATUS_ZOMBIE


def test_a_bad_process_count_is_refused_naming_it(tmp_path):
    result = subprocess.run([sys.executable, "-m", "controlplane.serve", "--port",
                             str(free_port())], cwd=REPO_ROOT, capture_output=True, text=True,
                            env={**os.environ, "ESTUARY_WEB_PROCESSES": "many"}, timeout=60)
    assert result.returncode != 0 and "ESTUARY_WEB_PROCESSES" in result.stderr
