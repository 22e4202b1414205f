"""Device-cloud inference: HAT (arXiv 2503.18989, U-shaped device-cloud LLM inference with
speculative decoding) and its baselines. Importing this package registers ``hat``,
``cloud-only-inference``, ``u-shaped-inference`` and ``device-cloud-sd``: four policies of one
serving loop, each running emulated or distributed (a device role per request on the edge
ranks, the cloud role on the coordinator).

Modules, one job each:

- :mod:`.config` -- configs; :mod:`.methods` -- catalogue entries;
- :mod:`.roles` -- each method's policy and role program;
- :mod:`.serving` -- the serving loop and its summary;
- :mod:`.protocols` -- how one request is served under each method (engine processes, cloud);
- :mod:`.devices` -- the device role under each method;
- :mod:`.engine` -- the event-driven emulation of many devices and one batching cloud;
- :mod:`.models` -- the served LLM, the adapter, the draft LM and the prompts (cached);
- :mod:`.partition` -- the U-shaped cut of a :class:`DecoderLM` (input / middle / output);
- :mod:`.adapter` -- the distilled adapter that makes input -> adapter -> output a draft model;
- :mod:`.sampling` -- speculative-sampling verification (exact for greedy and sampling);
- :mod:`.session` -- one request's real passes, KV caches, verification and rollback;
- :mod:`.chunking` -- predicted TTFT of a chunk size and the per-device choice;
- :mod:`.cost` -- FLOPs and bytes of the passes, turned into emulated seconds (roofline).

See docs/methods/hat.md for every choice of ours.
"""
from ml.algorithms.device_cloud_inference import methods  # noqa: F401  (registers the methods)
