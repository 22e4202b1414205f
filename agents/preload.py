"""Imported once by the agent's forkserver (:mod:`agents.child`): torch, every method of the
catalogue and the distributed runtime, so each role's child process starts with them loaded."""
from ml import distributed, registry  # noqa: F401

registry.load_all()
