"""The hotplug agent's pure part: which guests a card is for, and the event -> actions plan."""

from __future__ import annotations

import copy

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug import plan

CARD1 = "/sys/devices/platform/xhci-hcd.0.auto/usb1/1-1/1-1:1.0/sound/card1"
CARD0 = "/sys/devices/pci0000:00/0000:00:1f.3/sound/card0"


def node(name, minor):
    return {"name": name, "path": f"/dev/snd/{name}", "major": 116, "minor": minor}


USB_CARD = {
    "number": 1,
    "id": "Audio",
    "name": "KT USB Audio",
    "usb": {"vendor": "0c76", "product": "161f", "serial": "20180301", "name": "KT USB Audio"},
    "path": "platform-xhci-hcd.0.auto-usb-0:1:1.0",
    "sys_path": CARD1,
    "nodes": [node("controlC1", 10), node("pcmC1D0c", 8), node("pcmC1D0p", 9)],
}
ONBOARD = {
    "number": 0,
    "id": "PCH",
    "name": "HDA Intel PCH",
    "usb": None,
    "path": "pci-0000:00:1f.3",
    "sys_path": CARD0,
    "nodes": [node("controlC0", 7), node("pcmC0D0p", 4)],
}
SHARED = [node("seq", 1), node("timer", 33)]


def guest(name, selectors, pid=100):
    return {"name": name, "pid": pid, "selectors": selectors}


@pytest.mark.parametrize(
    "selector",
    [
        {"usb": "0c76:161f"},
        {"usb": "0C76:161F"},
        {"path": "platform-xhci-hcd.0.auto-usb-0:1:1.0"},
        {"serial": "20180301"},
        {"name": "kt usb audio"},
        {"id": "Audio"},
        {"usb": "0c76:161f", "serial": "20180301"},
    ],
)
def test_each_selector_kind_chooses_the_usb_card(selector):
    assert plan.wants(guest("g", [selector]), USB_CARD)
    assert not plan.wants(guest("g", [selector]), ONBOARD)


def test_all_keys_of_a_selector_must_match_and_any_selector_may():
    assert not plan.wants(guest("g", [{"usb": "0c76:161f", "serial": "other"}]), USB_CARD)
    assert plan.wants(guest("g", [{"serial": "other"}, {"id": "Audio"}]), USB_CARD)
    assert plan.wants(guest("g", None), ONBOARD)  # no selectors stored: every card
    assert not plan.wants(guest("g", []), USB_CARD)


def test_a_broken_stored_selector_chooses_nothing_instead_of_failing():
    assert not plan.wants(guest("g", [{"usb": "nonsense"}, {"colour": "red"}]), USB_CARD)
    assert plan.wants(guest("g", [{"usb": "nonsense"}, {"serial": "20180301"}]), USB_CARD)


def test_port_assignment_survives_a_replug_into_the_same_port_but_not_another():
    by_port = guest("g", [{"path": USB_CARD["path"]}])
    by_usb = guest("h", [{"usb": "0c76:161f"}])
    other_port = dict(USB_CARD, path="platform-xhci-hcd.0.auto-usb-0:1:2.0", number=2)
    assert plan.wants(by_port, dict(USB_CARD, number=3))  # same port, new card number
    assert not plan.wants(by_port, other_port)
    assert plan.wants(by_usb, other_port)


@pytest.mark.parametrize(
    "action, path, kind",
    [
        ("add", CARD1, "attach"),
        ("change", CARD1, "attach"),
        ("add", CARD1 + "/controlC1", None),
        ("add", CARD1 + "/pcmC1D0p", None),
        ("remove", CARD1 + "/controlC1", "detach"),
        ("remove", CARD1 + "/pcmC1D0p", None),
        ("remove", CARD1, "detach"),
        ("add", "/sys/devices/virtual/sound/seq", None),
        ("change", "/sys/devices/virtual/sound/timer", None),
    ],
)
def test_which_events_attach_or_detach(action, path, kind):
    assert plan.event_kind(action, path) == kind


def test_card_syspath_of_the_card_and_its_nodes():
    assert plan.card_syspath(CARD1) == CARD1
    assert plan.card_syspath(CARD1 + "/controlC1") == CARD1
    assert plan.card_syspath("/sys/devices/virtual/sound/seq") is None


def test_a_card_is_complete_once_its_control_node_is_there():
    assert plan.card_complete(USB_CARD)
    assert not plan.card_complete(dict(USB_CARD, nodes=[node("pcmC1D0p", 9)]))


def test_attach_goes_to_each_running_guest_that_wants_the_card_with_the_shared_nodes_first():
    guests = [guest("a", [{"usb": "0c76:161f"}], 10), guest("b", [{"id": "PCH"}], 20), guest("c", None, 30)]
    actions = plan.plan_attach(USB_CARD, guests, {}, SHARED)
    assert [(a["op"], a["guest"], a["pid"]) for a in actions] == [("attach", "a", 10), ("attach", "c", 30)]
    assert [n["name"] for n in actions[0]["nodes"]] == ["controlC1", "pcmC1D0c", "pcmC1D0p"]
    assert [n["name"] for n in actions[0]["shared"]] == ["seq", "timer"]
    assert plan.describe(actions[0]) == (
        "attach card 1 (KT USB Audio) to guest 'a': controlC1, pcmC1D0c, pcmC1D0p, seq, timer"
    )


def test_a_card_nobody_wants_plans_nothing():
    assert plan.plan_attach(USB_CARD, [guest("b", [{"id": "PCH"}])], {}, SHARED) == []
    assert plan.plan_attach(USB_CARD, [], {}, SHARED) == []


def test_second_card_gets_no_shared_nodes_and_a_held_card_is_not_attached_twice():
    ledger = {}
    g = guest("a", None, 10)
    (first,) = plan.plan_attach(ONBOARD, [g], ledger, SHARED)
    plan.record(ledger, first, SHARED)
    assert plan.plan_attach(ONBOARD, [g], ledger, SHARED) == []
    (second,) = plan.plan_attach(USB_CARD, [g], ledger, SHARED)
    assert second["shared"] == []


def test_a_restarted_guest_holds_nothing():
    ledger = {}
    (first,) = plan.plan_attach(USB_CARD, [guest("a", None, 10)], ledger, SHARED)
    plan.record(ledger, first, SHARED)
    restarted = [guest("a", None, 11)]
    (again,) = plan.plan_attach(USB_CARD, restarted, ledger, SHARED)
    assert again["pid"] == 11 and again["shared"] == SHARED
    assert plan.plan_detach(CARD1, restarted, ledger) == []
    assert plan.forget_stopped(ledger, restarted) == ["a"] and ledger == {}


def test_detach_follows_the_ledger_and_takes_the_shared_nodes_with_the_last_card():
    ledger = {}
    g = guest("a", [{"usb": "0c76:161f"}, {"id": "PCH"}], 10)
    for card in (USB_CARD, ONBOARD):
        (action,) = plan.plan_attach(card, [g], ledger, SHARED)
        plan.record(ledger, action, action["shared"][:1])  # only seq was written by the agent
    (first,) = plan.plan_detach(CARD1, [g], ledger)
    assert first["op"] == "detach" and first["shared"] == []
    assert [n["name"] for n in first["nodes"]] == ["controlC1", "pcmC1D0c", "pcmC1D0p"]
    plan.record(ledger, first, [])
    (last,) = plan.plan_detach(CARD0, [g], ledger)
    assert [n["name"] for n in last["shared"]] == ["seq"]
    assert plan.describe(last).startswith("detach card 0 (HDA Intel PCH) from guest 'a'")
    plan.record(ledger, last, [])
    assert ledger == {}


def test_detach_ignores_guests_that_changed_their_selectors_meanwhile():
    """Removal revokes what was granted, whatever the selectors say now."""
    ledger = {}
    (action,) = plan.plan_attach(USB_CARD, [guest("a", None, 10)], ledger, SHARED)
    plan.record(ledger, action, SHARED)
    (detach,) = plan.plan_detach(CARD1, [guest("a", [{"id": "PCH"}], 10)], ledger)
    assert detach["guest"] == "a"


def test_detach_of_an_unknown_card_or_a_stopped_guest_plans_nothing():
    ledger = {}
    (action,) = plan.plan_attach(USB_CARD, [guest("a", None, 10)], ledger, SHARED)
    plan.record(ledger, action, SHARED)
    assert plan.plan_detach(CARD0, [guest("a", None, 10)], ledger) == []
    assert plan.plan_detach(CARD1, [], ledger) == []


def test_reconcile_attaches_present_complete_cards_once_without_touching_the_ledger():
    ledger = {}
    half = dict(copy.deepcopy(ONBOARD), nodes=[node("pcmC0D0p", 4)])
    guests = [guest("a", None, 10), guest("b", [{"serial": "20180301"}], 20)]
    actions = plan.plan_reconcile([USB_CARD, half], guests, ledger, SHARED)
    assert [(a["guest"], a["card"]["number"], len(a["shared"])) for a in actions] == [("a", 1, 2), ("b", 1, 2)]
    assert ledger == {}
    for a in actions:
        plan.record(ledger, a, a["shared"])
    assert plan.plan_reconcile([USB_CARD, ONBOARD], guests, ledger, SHARED) == [
        dict(actions[0], card=ONBOARD, nodes=ONBOARD["nodes"], shared=[])
    ]
