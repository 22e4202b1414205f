"""HAT (arXiv 2503.18989, papers.md §2): U-shaped device–cloud LLM inference with speculative
decoding, and its baselines. Importing this package registers ``hat``,
``cloud-only-inference``, ``u-shaped-inference`` and ``device-cloud-sd``.

Modules, one job each:

- :mod:`.partition` -- the U-shaped cut of a :class:`DecoderLM` (input / middle / output);
- :mod:`.adapter` -- the distilled adapter that makes input -> adapter -> output a draft model;
- :mod:`.sampling` -- speculative-sampling verification (exact for greedy and sampling);
- :mod:`.session` -- one request's real passes, KV caches, verification and rollback;
- :mod:`.chunking` -- predicted TTFT of a chunk size and the per-device choice;
- :mod:`.cost` -- FLOPs and bytes of the passes, turned into emulated seconds (roofline);
- :mod:`.engine` -- the event-driven emulation of many devices and one batching cloud;
- :mod:`.protocols` -- what a device does under HAT and under each baseline;
- :mod:`.config`, :mod:`.methods` -- configs and catalogue entries.

See docs/methods/hat.md for every choice of ours.
"""
from ml.algorithms.hat.methods import CLOUD_ONLY, DEVICE_CLOUD_SD, HAT, U_SHAPED

__all__ = ["CLOUD_ONLY", "DEVICE_CLOUD_SD", "HAT", "U_SHAPED"]
