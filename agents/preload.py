"""Imported once by the agent's forkserver (:mod:`agents.child`): torch, every method of the
catalogue, the distributed runtime and the packaged data sets' readers, so each role's child
process starts with them loaded."""
from ml import distributed, registry  # noqa: F401
from ml.data.images import import_packaged_readers

registry.load_all()
import_packaged_readers()
