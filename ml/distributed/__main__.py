"""``python -m ml.distributed SPEC RANK``: one rank of a local run (see ml.distributed.local)."""
import sys
from pathlib import Path

from ml.distributed.local import child_main

raise SystemExit(child_main(Path(sys.argv[1]), int(sys.argv[2])))
