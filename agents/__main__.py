"""``python -m agents run --server URL --token TOKEN --name NAME --profile PROFILE``."""
import logging
import os
import sys

from agents.cli import main

status = main()
# Everything is flushed and reported by now; skip the interpreter's teardown, which takes
# seconds with torch loaded and would only delay a stack waiting for its agents to stop.
logging.shutdown()
sys.stdout.flush()
sys.stderr.flush()
os._exit(status)
