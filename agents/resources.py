"""What the agent's machine is using now, sent with each heartbeat (the devices page shows it).

CPU and memory come from psutil; GPUs, where torch sees CUDA, from ``torch.cuda`` (memory in use
on each device, and its utilisation when the NVML bindings are installed). Reading them must
never stop a heartbeat: any failure leaves that part out.
"""
from __future__ import annotations

import logging
import sys
from typing import Any

import psutil

log = logging.getLogger(__name__)

MIB = 2**20


def _gpus() -> list[dict[str, Any]]:
    torch = sys.modules.get("torch")  # only when already imported: no 1 s import per beat
    if torch is None or not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        entry: dict[str, Any] = {"name": torch.cuda.get_device_name(index)[:100],
                                 "memory_used_mib": round((total - free) / MIB),
                                 "memory_total_mib": round(total / MIB),
                                 "utilization_percent": None}
        try:
            entry["utilization_percent"] = float(torch.cuda.utilization(index))
        except Exception:  # noqa: BLE001  (no NVML bindings: memory only)
            pass
        gpus.append(entry)
    return gpus


def resource_usage() -> dict[str, Any]:
    """``{"cpu_percent", "memory_percent", "memory_used_mib", "memory_total_mib", "gpus": [...]}``
    (CPU: all cores, since the previous call)."""
    usage: dict[str, Any] = {}
    try:
        memory = psutil.virtual_memory()
        usage.update(cpu_percent=float(psutil.cpu_percent(interval=None)),
                     memory_percent=float(memory.percent),
                     memory_used_mib=round((memory.total - memory.available) / MIB),
                     memory_total_mib=round(memory.total / MIB))
    except Exception:  # noqa: BLE001
        log.debug("could not read CPU and memory use", exc_info=True)
    try:
        usage["gpus"] = _gpus()
    except Exception:  # noqa: BLE001
        log.debug("could not read GPU use", exc_info=True)
        usage["gpus"] = []
    return usage
