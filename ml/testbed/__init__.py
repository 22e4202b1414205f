"""The emulated testbed: device profiles, named presets, and clocks, links and traffic.

``resolve_testbed(config.testbed, workers)`` turns a config's testbed into a :class:`Testbed`;
see :mod:`ml.testbed.emulator` for the time model. Imports nothing heavy (no torch), so the
control plane and agents can use it.
"""
from ml.testbed.emulator import EmulatedDevice, Testbed, TrafficKey, TrafficLedger
from ml.testbed.presets import PRESETS, check_testbed_spec, cross_region, resolve_testbed
from ml.testbed.profiles import PROFILES, DeviceProfile, get_profile

__all__ = [
    "PRESETS", "PROFILES", "DeviceProfile", "EmulatedDevice", "Testbed", "TrafficKey",
    "TrafficLedger", "check_testbed_spec", "cross_region", "get_profile", "resolve_testbed",
]
