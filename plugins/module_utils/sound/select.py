# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Card selectors (usb, id, name, path, serial) and matching them to discovered cards.

A selector is a dict of one or more of the keys; a card matches when every
key given matches. A list of selectors chooses every card any of them
matches; no list chooses every card.
"""

from __future__ import annotations

import re

from ansible_collections.kiosk.lxc.plugins.module_utils.common import text
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

SELECTOR_KEYS = ("usb", "id", "name", "path", "serial")
USB_RE = re.compile(r"[0-9a-f]{4}:[0-9a-f]{4}")


def normalize_selector(selector: dict, option: str = "cards") -> dict:
    """The selector without empty keys, `usb` lower-cased; KioskError when it is unusable."""
    unknown = sorted(set(selector) - set(SELECTOR_KEYS))
    if unknown:
        raise KioskError(
            f"Option {option}: unknown selector key(s) {', '.join(unknown)}; use {', '.join(SELECTOR_KEYS)}"
        )
    sel = {k: str(v) for k, v in selector.items() if v not in (None, "")}
    if not sel:
        raise KioskError(f"Option {option}: a selector needs at least one of {', '.join(SELECTOR_KEYS)}")
    if "usb" in sel:
        sel["usb"] = sel["usb"].lower()
        if not USB_RE.fullmatch(sel["usb"]):
            usb = text.quote(selector["usb"])
            raise KioskError(f"Option {option}: usb {usb} is not vendor:product in hex like 0c76:161f")
    return sel


def card_selectors(card: dict) -> dict:
    """The selector values a card answers to (those it has)."""
    usb = card.get("usb") or {}
    values = {
        "usb": f"{usb['vendor']}:{usb['product']}" if usb.get("vendor") else None,
        "id": card.get("id"),
        "name": card.get("name"),
        "path": card.get("path"),
        "serial": usb.get("serial"),
    }
    return {k: v for k, v in values.items() if v}


def matches(card: dict, selector: dict) -> bool:
    """Whether the card answers to every key of the (normalised) selector."""
    have = card_selectors(card)
    for key, want in selector.items():
        if key == "name":
            names = {have.get("name", ""), (card.get("usb") or {}).get("name") or ""}
            if want.casefold() not in {n.casefold() for n in names if n}:
                return False
        elif have.get(key) != want:
            return False
    return True


def describe_selector(selector: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in selector.items())


def describe_cards(cards: list[dict]) -> str:
    if not cards:
        return "the host has no sound cards"
    return "the host has " + "; ".join(f"card {c['number']} ({describe_selector(card_selectors(c))})" for c in cards)


def choose(cards: list[dict], selectors: list[dict] | None, missing: str = "fail") -> dict:
    """{"cards": chosen cards by number, "unmatched": selectors that matched nothing}.

    missing="fail" raises KioskError, listing the cards that do exist, when
    a selector (or, without selectors, the whole host) has no card.
    """
    if selectors is None:
        if not cards and missing == "fail":
            raise KioskError(f"No sound card to pass through: {describe_cards(cards)}")
        return {"cards": list(cards), "unmatched": []}
    chosen: dict[int, dict] = {}
    unmatched = []
    for sel in selectors:
        hits = [c for c in cards if matches(c, sel)]
        if not hits:
            unmatched.append(sel)
        for card in hits:
            chosen[card["number"]] = card
    if unmatched and missing == "fail":
        wanted = " / ".join(f"{{{describe_selector(s)}}}" for s in unmatched)
        raise KioskError(
            f"No sound card matches {wanted}: {describe_cards(cards)}",
            unmatched=unmatched,
            available=[card_selectors(c) for c in cards],
        )
    return {"cards": [chosen[n] for n in sorted(chosen)], "unmatched": unmatched}
