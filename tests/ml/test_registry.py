"""The catalogue's index (which module registers which method) and what one run imports, checked
in fresh interpreters: the test process has long imported everything."""
import json
import os
import subprocess
import sys
from pathlib import Path

from ml import registry

ROOT = Path(__file__).resolve().parents[2]


def python(code: str, timeout: float = 300) -> dict:
    """Run ``code`` in a fresh interpreter at the repository root; the JSON it prints last."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_each_module_registers_exactly_the_methods_the_index_gives_it():
    registered = python(
        "import importlib, json\n"
        "from ml import registry\n"
        "found = {}\n"
        "for module in registry.METHOD_MODULES:\n"
        "    before = set(registry._METHODS)\n"
        "    importlib.import_module(module)\n"
        "    found[module] = sorted(set(registry._METHODS) - before)\n"
        "print(json.dumps(found))\n")
    assert registered == {module: sorted(names)
                          for module, names in registry.METHOD_MODULES.items()}


def test_the_listing_has_every_method_of_the_index():
    listed = [m.name for m in registry.all_methods()]
    indexed = [name for names in registry.METHOD_MODULES.values() for name in names]
    assert sorted(listed) == sorted(indexed) and len(set(indexed)) == len(indexed)
    assert registry.ALGORITHM_MODULES == list(registry.METHOD_MODULES)


def test_getting_a_method_imports_its_family_only():
    imported = python(
        "import json, sys\n"
        "from ml import registry\n"
        "registry.get('hat')\n"
        "print(json.dumps(sorted({m.split('.')[2] for m in sys.modules\n"
        "                         if m.startswith('ml.algorithms.') and m.count('.') >= 2})))\n")
    assert imported == ["device_cloud_inference"]


def test_a_fedavg_run_imports_no_other_family_and_freezes_its_imports(tmp_path):
    """``python -m ml run`` (``main(own_process=True)``): fedavg's family only, no pandas (the
    MNIST CSV is parsed by numpy), and the start-up imports frozen out of the garbage
    collector's reach with collection running again for the run."""
    out = tmp_path / "result.json"
    seen = python(
        "import gc, json, sys\n"
        "from ml.cli import main\n"
        f"code = main(['run', 'fedavg', '--quiet', '--out', {str(out)!r}, "
        "'--set', 'dataset=mnist-5000', '--set', 'model=cnn-small', "
        "'--set', 'workers=2', '--set', 'rounds=1'], own_process=True)\n"
        "print(json.dumps({'code': code, 'families': sorted({m.split('.')[2] for m in "
        "sys.modules if m.startswith('ml.algorithms.') and m.count('.') >= 2}), "
        "'pandas': 'pandas' in sys.modules, 'gc_enabled': gc.isenabled(), "
        "'frozen': gc.get_freeze_count()}))\n")
    assert seen["code"] == 0 and json.loads(out.read_text())["result"]["final"]["accuracy"] > 0
    assert seen["families"] == ["federated_learning"]
    assert not seen["pandas"]
    assert seen["gc_enabled"] and seen["frozen"] > 100_000


def test_an_in_process_run_leaves_the_garbage_collector_alone(tmp_path):
    """``main()`` from a long-lived process (tests, scripts) freezes nothing."""
    seen = python(
        "import gc, json\n"
        "from ml.cli import main\n"
        f"code = main(['run', 'fedavg', '--quiet', '--out', {str(tmp_path / 'r.json')!r}, "
        "'--set', 'dataset=mnist-5000', '--set', 'workers=2', '--set', 'rounds=1'])\n"
        "print(json.dumps({'code': code, 'gc_enabled': gc.isenabled(), "
        "'frozen': gc.get_freeze_count()}))\n")
    assert seen == {"code": 0, "gc_enabled": True, "frozen": 0}
