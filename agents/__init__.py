"""The Estuary agent: the daemon that runs on each device of a testbed.

``python -m agents run --server URL --token TOKEN --name NAME --profile PROFILE`` enrols the
device with the control plane, stores its credential in a 0600 file, heartbeats, and runs a Celery
worker on the device's own queue (``device.<id>``). Each job runs a method of ``ml/`` with an
:class:`agents.reporter.HttpReporter` that posts metric points back to the control plane.

Modules, one job each:
  cli         the command line (argument parsing, one-line errors)
  exit_status what the agent's exit statuses mean to a supervisor
  credentials the credential file in the state directory
  client      HTTP calls to the control plane (timeouts, error classes)
  retry       backoff for calls whose failure may be temporary
  tracker     the running job and its cancellation flag
  heartbeat   the heartbeat thread
  spool       points kept on disk while the server cannot take them
  reporter    ml.reporting.Reporter that batches points to the control plane
  jobs        one job: start, run the method, finish
  worker      the in-process Celery worker and its ``estuary.run_job`` task
  daemon      enrol or reuse the credential, then heartbeat and work until a signal
  stack       ``./estuary up`` and ``./estuary test`` (a local stack, not part of the daemon)
"""
