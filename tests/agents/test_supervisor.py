"""The stack's supervisor (agents/stack/processes.py) with real short-lived processes: a child
that dies is restarted with a growing delay; one that stopped on purpose is left stopped."""
import sys
import time

from agents import exit_status
from agents.stack.processes import BACKOFF_CAP_S, Supervisor


def exiting_with(status: int) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.exit({status})"]


def wait_exit(supervisor: Supervisor) -> None:
    for child in supervisor.children:
        child.process.wait(timeout=30)


def test_it_restarts_a_dead_child_with_a_doubling_delay(tmp_path):
    supervisor = Supervisor(tmp_path)
    child = supervisor.start("crashy", exiting_with(1))
    wait_exit(supervisor)
    now = child.started_at
    assert supervisor.supervise(now) == ["crashy exited with status 1; restarting it in 1 s"]
    assert supervisor.supervise(now + 0.5) == []  # not yet
    assert supervisor.supervise(now + 1) == [f"restarted crashy (pid {child.pid})"]
    wait_exit(supervisor)
    assert supervisor.supervise(now + 2) == ["crashy exited with status 1; restarting it in 2 s"]
    assert "supervisor: crashy exited with status 1" in (tmp_path / "crashy.log").read_text()
    child.failures = 20
    supervisor.supervise(now + 4)
    wait_exit(supervisor)
    assert supervisor.supervise(now + 5)[0].endswith(f"restarting it in {BACKOFF_CAP_S:.0f} s")


def test_it_forgets_old_failures_of_a_child_that_ran_a_while(tmp_path):
    supervisor = Supervisor(tmp_path)
    child = supervisor.start("steady", exiting_with(1))
    child.failures = 5
    wait_exit(supervisor)
    assert supervisor.supervise(child.started_at + 3600)[0].endswith("restarting it in 1 s")


def test_it_leaves_a_child_whose_credential_was_refused_stopped(tmp_path):
    supervisor = Supervisor(tmp_path)
    child = supervisor.start("agent-x", exiting_with(exit_status.CREDENTIAL_REFUSED))
    wait_exit(supervisor)
    [line] = supervisor.supervise()
    assert line.startswith("agent-x exited with status 3; leaving it stopped: the control plane "
                           "refused its credential")
    assert supervisor.supervise(child.started_at + 3600) == []
    assert not child.running and child.left_stopped


def test_it_leaves_a_child_that_stopped_on_purpose_stopped(tmp_path):
    supervisor = Supervisor(tmp_path)
    supervisor.start("web", exiting_with(0))
    wait_exit(supervisor)
    [line] = supervisor.supervise()
    assert "leaving it stopped" in line


def test_it_kills_and_restarts_a_child_that_stopped_making_progress(tmp_path):
    """A worker alive but stuck (its progress mark untouched) is treated as dead."""
    mark = tmp_path / "reaper.mark"
    supervisor = Supervisor(tmp_path)
    child = supervisor.start("worker", [sys.executable, "-c", "import time; time.sleep(60)"],
                             progress_mark=mark, max_silence_s=0.5)
    mark.touch()
    assert supervisor.supervise() == []  # touched just now: making progress
    time.sleep(1)
    stuck = child.pid
    [killed, restarting] = supervisor.supervise()
    assert killed.startswith("worker made no progress for ") and killed.endswith(" s; killing it")
    assert restarting == "worker was killed by SIGKILL; restarting it in 1 s"
    assert child.process.poll() is not None
    [restarted] = supervisor.supervise(child.restart_at)
    assert child.pid != stuck and restarted == f"restarted worker (pid {child.pid})"
    # A restart gives it a fresh allowance, whatever the age of the mark.
    assert supervisor.supervise() == []
    supervisor.stop_all(timeout_s=5)


def test_a_child_without_a_progress_mark_is_never_judged_stuck(tmp_path):
    supervisor = Supervisor(tmp_path)
    supervisor.start("web", [sys.executable, "-c", "import time; time.sleep(60)"])
    time.sleep(0.2)
    assert supervisor.supervise() == []
    supervisor.stop_all(timeout_s=5)
