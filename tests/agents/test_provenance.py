"""What an agent records about the code it runs a job with (agents/provenance.py)."""
import subprocess
from pathlib import Path

from agents.provenance import KEY_PACKAGES, agent_provenance, code_version

ROOT = Path(__file__).resolve().parents[2]


def test_it_names_the_checkouts_commit():
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    assert code_version(ROOT).removesuffix("+dirty") == f"git:{head}"


def test_outside_a_checkout_it_names_the_package_version(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "estuary"\nversion = "9.8.7"\n')
    assert code_version(tmp_path) == "estuary 9.8.7"


def test_it_names_the_versions_of_the_key_and_pinned_packages():
    import django
    import torch

    packages = agent_provenance()["packages"]
    assert packages["torch"] == torch.__version__
    assert set(KEY_PACKAGES) <= set(packages)
    assert packages["Django"] == django.__version__  # pinned in requirements.txt
