"""Split learning: SplitFed (arXiv 2004.12088), AdaSFL, MergeSFL (arXiv 2311.13348) and
ParallelSFL (arXiv 2410.01256).

- :mod:`.config`: the configs; :mod:`.methods`: the catalogue entries; :mod:`.roles`: the role
  programs (every method runs emulated and distributed).
- :mod:`.splitfed`: SFL-V2's round loop; :mod:`.regulated`: the one loop of AdaSFL and MergeSFL
  (the two are policies of it); :mod:`.parallel`: ParallelSFL's round loop.
- :mod:`.planning` (batch-size regulation, worker selection, the planners), :mod:`.clustering`
  (ParallelSFL's clusters), :mod:`.training` (one iteration, costs), :mod:`.sampling` (batches),
  :mod:`.workers` (the worker's and the server's objects), :mod:`.context` (each rank's set-up).
"""
from ml.algorithms.split_learning import methods  # noqa: F401  (registers the methods)
