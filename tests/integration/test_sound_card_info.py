"""kiosk.lxc.sound_card_info through ansible-playbook, with udev from a umockdev recording.

This machine has no sound hardware, so udev's view of one is the recorded
testbed (tests/fixtures/umockdev/two_cards.umockdev); ansible-playbook and
the module it runs are children of umockdev-run and read it through libudev
as they would a real host's.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "umock", Path(__file__).resolve().parents[1] / "fixtures" / "umockdev" / "umock.py"
)
umock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(umock)

pytestmark = pytest.mark.skipif(not umock.available(), reason="umockdev-run is missing")


CASES = {
    "all": {},
    "by serial, check mode": {"cards": [{"serial": "20180301"}], "check": True},
    "missing, fail": {"cards": [{"usb": "0c76:1620"}], "missing": "fail"},
    "missing, ignore": {"cards": [{"usb": "0c76:1620"}]},
    "bad selector": {"cards": [{"usb": "KT"}]},
}


@pytest.fixture(scope="module")
def results():
    """Every case as one task of one playbook (one ansible-playbook start)."""
    tasks = []
    for case in CASES.values():
        args = {k: v for k, v in case.items() if k != "check"}
        tasks.append({"kiosk.lxc.sound_card_info": args, "check_mode": case.get("check", False)})
    return dict(zip(CASES, umock.run_tasks(umock.TWO_CARDS, tasks), strict=True))


def test_lists_every_card_with_nodes_and_selectors(results):
    result = results["all"]
    assert result["_status"] == "ok" and result["changed"] is False
    cards = {c["number"]: c for c in result["cards"]}
    assert sorted(cards) == [0, 1]
    usb = cards[1]
    assert usb["selectors"] == {
        "usb": "0c76:161f",
        "id": "Audio",
        "name": "KT USB Audio",
        "path": "platform-xhci-hcd.0.auto-usb-0:1:1.0",
        "serial": "20180301",
    }
    assert usb["driver"] == "snd-usb-audio"
    assert {n["name"]: [n["major"], n["minor"]] for n in usb["nodes"]} == {
        "controlC1": [116, 10],
        "pcmC1D0c": [116, 8],
        "pcmC1D0p": [116, 9],
    }
    assert [n["name"] for n in result["shared_nodes"]] == ["seq", "timer"]


def test_selectors_filter_in_check_mode_too(results):
    result = results["by serial, check mode"]
    assert result["_status"] == "ok"
    assert [c["number"] for c in result["cards"]] == [1]
    assert result["unmatched"] == []


def test_a_missing_card_fails_with_the_listing_or_is_reported(results):
    failed = results["missing, fail"]
    assert failed["_status"] == "failed"
    assert failed["msg"].startswith("No sound card matches {usb: 0c76:1620}: the host has card 0")
    assert "card 1 (usb: 0c76:161f, id: Audio" in failed["msg"]

    ignored = results["missing, ignore"]
    assert ignored["_status"] == "ok"
    assert ignored["cards"] == [] and ignored["unmatched"] == [{"usb": "0c76:1620"}]


def test_bad_selector_fails_before_anything(results):
    result = results["bad selector"]
    assert result["_status"] == "failed"
    assert result["msg"] == "Option cards: usb 'KT' is not vendor:product in hex like 0c76:161f"
