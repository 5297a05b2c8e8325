"""Choosing cards by selector, on the cards discovered from the umockdev recording."""

from __future__ import annotations

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.sound.select import (
    card_selectors,
    choose,
    normalize_selector,
)


def _numbers(cards, selectors, missing="fail"):
    sels = None if selectors is None else [normalize_selector(s) for s in selectors]
    return [c["number"] for c in choose(cards, sels, missing)["cards"]]


@pytest.mark.parametrize(
    "selector",
    [
        {"usb": "0c76:161f"},
        {"usb": "0C76:161F"},
        {"id": "Audio"},
        {"name": "KT USB Audio"},
        {"name": "kt usb audio"},
        {"path": "platform-xhci-hcd.0.auto-usb-0:1:1.0"},
        {"serial": "20180301"},
        {"usb": "0c76:161f", "serial": "20180301"},
    ],
)
def test_each_selector_kind_chooses_the_usb_card_only(two_cards, selector):
    assert _numbers(two_cards["cards"], [selector]) == [1]


def test_all_keys_of_a_selector_must_match(two_cards):
    result = choose(two_cards["cards"], [{"usb": "0c76:161f", "serial": "999"}], "ignore")
    assert result["cards"] == []


def test_several_selectors_choose_the_union_once(two_cards):
    sels = [{"id": "PCH"}, {"usb": "0c76:161f"}, {"serial": "20180301"}]
    assert _numbers(two_cards["cards"], sels) == [0, 1]


def test_no_selectors_choose_every_card(two_cards):
    assert _numbers(two_cards["cards"], None) == [0, 1]


def test_a_miss_fails_with_one_sentence_listing_the_cards_there_are(two_cards):
    with pytest.raises(KioskError) as err:
        choose(two_cards["cards"], [{"id": "PCH"}, {"usb": "0c76:1620"}], "fail")
    msg = err.value.msg
    assert msg.startswith("No sound card matches {usb: 0c76:1620}: the host has card 0 (")
    assert "\n" not in msg
    assert "card 0 (id: PCH, name: Cannon Lake PCH cAVS, path: pci-0000:00:1f.3)" in msg
    assert (
        "card 1 (usb: 0c76:161f, id: Audio, name: KT USB Audio, "
        "path: platform-xhci-hcd.0.auto-usb-0:1:1.0, serial: 20180301)"
    ) in msg
    assert err.value.details["unmatched"] == [{"usb": "0c76:1620"}]


def test_a_miss_with_ignore_is_fine_and_reported(two_cards):
    result = choose(two_cards["cards"], [{"serial": "nope"}, {"id": "PCH"}], "ignore")
    assert [c["number"] for c in result["cards"]] == [0]
    assert result["unmatched"] == [{"serial": "nope"}]


def test_a_host_without_cards(two_cards):
    with pytest.raises(KioskError, match="the host has no sound cards"):
        choose([], None, "fail")
    assert choose([], None, "ignore") == {"cards": [], "unmatched": []}


@pytest.mark.parametrize(
    "selector, fragment",
    [
        ({"usb": "0c76"}, "usb '0c76' is not vendor:product"),
        ({"usb": "zzzz:161f"}, "is not vendor:product"),
        ({"vendor": "0c76"}, "unknown selector key(s) vendor"),
        ({"usb": None, "id": ""}, "needs at least one of usb, id, name, path, serial"),
    ],
)
def test_bad_selectors_fail_naming_the_option(selector, fragment):
    with pytest.raises(KioskError) as err:
        normalize_selector(selector)
    assert err.value.msg.startswith("Option cards: ")
    assert fragment in err.value.msg


def test_card_selectors_are_what_the_card_answers_to(two_cards):
    assert card_selectors(two_cards["cards"][0]) == {
        "id": "PCH",
        "name": "Cannon Lake PCH cAVS",
        "path": "pci-0000:00:1f.3",
    }
