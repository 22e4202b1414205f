"""Exit statuses of ``python -m agents run`` that a supervisor acts on (see README.md, "Agents").

- 0: stopped on purpose (SIGINT/SIGTERM): leave it stopped.
- 2: a usage or set-up error reported as one ``error:`` line (bad argument, refused token).
- 3 (:data:`CREDENTIAL_REFUSED`): the control plane refused the device's credential, e.g. the
  device was deleted; restarting cannot help, so a supervisor leaves the agent stopped.
- anything else, or death by a signal: the agent crashed; a supervisor restarts it.
"""

STOPPED = 0
USAGE_ERROR = 2
CREDENTIAL_REFUSED = 3
