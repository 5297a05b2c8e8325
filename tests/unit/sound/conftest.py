"""Discovery runs for real, against udev data recorded by hand for umockdev."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "umock", Path(__file__).resolve().parents[2] / "fixtures" / "umockdev" / "umock.py"
)
umock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(umock)


@pytest.fixture(scope="session")
def umockdev():
    if not umock.available():
        pytest.skip("umockdev-run is missing: install umockdev (bindep.txt)")
    return umock


@pytest.fixture(scope="session")
def two_cards(umockdev):
    """discover() over the recording of an onboard card 0 and the USB card 1 (seed 000's)."""
    return umockdev.run_json(
        umockdev.TWO_CARDS,
        "from ansible_collections.kiosk.lxc.plugins.module_utils.sound import discovery\n"
        "print(json.dumps(discovery.discover(proc_root='/nonexistent')))",
    )
