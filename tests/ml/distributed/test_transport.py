"""ml.distributed.transport between real rank processes (gloo over loopback): which device a
failure names when a rank leaves because it lost another peer."""
import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# One rank of a three-rank run. Rank 1 sends rank 0 a message with a payload, then leaves the
# way a worker leaves when it lost rank 2 (``report_failure`` with the PeerLost, then exits)
# before rank 0 has taken the payload; rank 2 just stays. Rank 0 then receives from rank 1.
RANK = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    import torch
    from ml.distributed.errors import PeerLost
    from ml.distributed.serve import report_failure
    from ml.distributed.transport import Peer, Rendezvous, Transport

    rank, port, workdir = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    peers = [Peer(r, f"device-{r}", f"jetson-{r}") for r in range(3)]
    transport = Transport(peers, rank, Rendezvous("127.0.0.1", port, "test-run", 20.0))
    if rank == 1:
        transport.send(0, {"op": "reply"}, [torch.arange(100_000, dtype=torch.float32)])
        report_failure(transport, PeerLost(2, "device-2", "jetson-2", "no heartbeat"))
        transport.close(graceful=False)
        os._exit(0)
    if rank == 0:
        while not (workdir / "rank1-gone").exists():
            time.sleep(0.05)
        try:
            transport.recv(1)
            outcome = {"received": True}
            message = transport.recv(1)
            outcome["next"] = message.header
        except PeerLost as exc:
            outcome = {"lost": exc.as_dict()}
        (workdir / "outcome.json").write_text(json.dumps(outcome))
    else:
        while not (workdir / "outcome.json").exists():
            time.sleep(0.05)
    transport.close(graceful=False)
    os._exit(0)
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_rank_that_left_over_a_lost_peer_is_not_blamed_for_it(tmp_path):
    port = free_port()
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(port), str(tmp_path)],
                              cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for r in range(3)]
    try:
        assert procs[1].wait(timeout=120) == 0, procs[1].stderr.read().decode()[-2000:]
        (tmp_path / "rank1-gone").touch()
        for p in (procs[0], procs[2]):
            assert p.wait(timeout=60) == 0, p.stderr.read().decode()[-2000:]
    finally:
        for p in procs:
            p.kill()
    outcome = json.loads((tmp_path / "outcome.json").read_text())
    # Whether the payload still arrives depends on gloo's buffering; either way the run's
    # failure must name rank 2's device, never rank 1's (the messenger).
    if "lost" in outcome:
        assert outcome["lost"]["device"] == "device-2", outcome
    else:
        assert outcome["next"]["op"] == "bye" and outcome["next"]["lost"]["device"] == "device-2"
