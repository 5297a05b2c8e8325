# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hotplug agent's pure part: which guests a card is for, and the event -> actions plan.

No I/O here. The inputs are plain dicts:
- a card as sound.discovery reports it (number, id, name, usb, path,
  sys_path, nodes [{name, path, major, minor}]);
- the running guests: {"name", "pid" (libvirt's controller pid, the
  domain id), "selectors", "udev_dir" (the guest's own udev data, or None)} where selectors are those sound_passthrough
  stored under SOUND_NS (None: every card; a guest without our metadata is
  not listed at all);
- the ledger: what the agent attached so far, per guest
  {"pid", "cards": {card sys_path: card}, "shared": [shared nodes the agent granted]}.

An attach gives a guest the card's nodes, plus the shared timer/seq with
its first card; a detach takes the card's nodes away, plus the shared
nodes the agent granted once the guest's last card is gone. The ledger is
keyed by guest name and remembers the controller pid: a guest that
restarted (new pid, new cgroup) holds nothing.
"""

from __future__ import annotations

import re

from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.sound.select import matches, normalize_selector

CARD_RE = re.compile(r"card(\d+)")
CONTROL_RE = re.compile(r"controlC(\d+)")


def card_syspath(sys_path: str) -> str | None:
    """The card a sound device belongs to (itself for cardN, its parent for a card's node)."""
    base = sys_path.rstrip("/")
    name = base.rsplit("/", 1)[-1]
    if CARD_RE.fullmatch(name):
        return base
    parent = base.rsplit("/", 1)[0]
    if CARD_RE.fullmatch(parent.rsplit("/", 1)[-1]):
        return parent
    return None


def event_kind(action: str, sys_path: str) -> str | None:
    """What a udev event means for a card: "attach", "detach" or None (nothing to do).

    ALSA creates a card's controlC node last, and udev turns its add into a
    `change` of the card once every node is set up (78-sound-card.rules), so
    a card's add/change is the moment to attach (the caller then checks the
    control node is there). A card leaves with the remove of its control
    node or of the card itself, whichever comes first.
    """
    name = sys_path.rstrip("/").rsplit("/", 1)[-1]
    if action in ("add", "change", "bind") and CARD_RE.fullmatch(name):
        return "attach"
    if action == "remove" and (CARD_RE.fullmatch(name) or CONTROL_RE.fullmatch(name)):
        return "detach"
    return None


def card_complete(card: dict) -> bool:
    """Whether ALSA has finished the card: its control node exists."""
    return any(CONTROL_RE.fullmatch(n["name"]) for n in card["nodes"])


def wants(guest: dict, card: dict) -> bool:
    """Whether a guest's stored selectors choose the card (None: every card)."""
    if guest["selectors"] is None:
        return True
    for sel in guest["selectors"]:
        try:
            if matches(card, normalize_selector(sel, option=f"guest {guest['name']} stored selector")):
                return True
        except KioskError:
            continue  # a broken stored selector chooses nothing
    return False


def guests_for(card: dict, guests: list[dict]) -> list[dict]:
    return [g for g in guests if wants(g, card)]


def _held(ledger: dict, guest: dict) -> dict:
    """The guest's ledger entry, empty when it restarted since (another controller pid)."""
    entry = ledger.get(guest["name"])
    if entry is None or entry["pid"] != guest["pid"]:
        return {"pid": guest["pid"], "cards": {}, "shared": []}
    return entry


def plan_attach(card: dict, guests: list[dict], ledger: dict, shared_nodes: list[dict]) -> list[dict]:
    """One attach action per running guest that wants the card and does not hold it yet."""
    actions = []
    for guest in guests_for(card, guests):
        held = _held(ledger, guest)
        if card["sys_path"] in held["cards"]:
            continue
        actions.append(
            {
                "op": "attach",
                "guest": guest["name"],
                "pid": guest["pid"],
                "card": card,
                "nodes": list(card["nodes"]),
                # the shared nodes go with the guest's first card
                "shared": [] if held["cards"] else list(shared_nodes),
                "udev_dir": guest.get("udev_dir"),
            }
        )
    return actions


def plan_detach(sys_path: str, guests: list[dict], ledger: dict) -> list[dict]:
    """One detach action per running guest that holds the card (by the ledger, not by selectors)."""
    running = {g["name"]: g for g in guests}
    actions = []
    for name in sorted(ledger):
        entry = ledger[name]
        card = entry["cards"].get(sys_path)
        guest = running.get(name)
        if card is None or guest is None or guest["pid"] != entry["pid"]:
            continue
        last = len(entry["cards"]) == 1
        actions.append(
            {
                "op": "detach",
                "guest": name,
                "pid": entry["pid"],
                "card": card,
                "nodes": list(card["nodes"]),
                "shared": list(entry["shared"]) if last else [],
                "udev_dir": guest.get("udev_dir"),
            }
        )
    return actions


def plan_reconcile(cards: list[dict], guests: list[dict], ledger: dict, shared_nodes: list[dict]) -> list[dict]:
    """Attach every present, complete card to the running guests that want it and lack it.

    Run at start and now and then: it catches the guests started (or
    restarted) since a card arrived, without any event for the card.
    """
    actions = []
    trial = {name: dict(entry, cards=dict(entry["cards"])) for name, entry in ledger.items()}
    for card in cards:
        if not card_complete(card):
            continue
        for action in plan_attach(card, guests, trial, shared_nodes):
            actions.append(action)
            entry = trial.setdefault(action["guest"], {"pid": action["pid"], "cards": {}, "shared": []})
            if entry["pid"] != action["pid"]:
                entry.update(pid=action["pid"], cards={}, shared=[])
            entry["cards"][card["sys_path"]] = card
    return actions


def record(ledger: dict, action: dict, shared_granted: list[dict]) -> None:
    """Update the ledger once an action was applied (shared_granted: shared nodes the agent wrote)."""
    name = action["guest"]
    entry = ledger.get(name)
    if entry is None or entry["pid"] != action["pid"]:
        entry = ledger[name] = {"pid": action["pid"], "cards": {}, "shared": []}
    if action["op"] == "attach":
        entry["cards"][action["card"]["sys_path"]] = action["card"]
        known = {n["name"] for n in entry["shared"]}
        entry["shared"] += [n for n in shared_granted if n["name"] not in known]
    else:
        entry["cards"].pop(action["card"]["sys_path"], None)
        if not entry["cards"]:
            del ledger[name]


def forget_stopped(ledger: dict, guests: list[dict]) -> list[str]:
    """Drop the entries of guests that stopped or restarted; returns their names."""
    running = {g["name"]: g["pid"] for g in guests}
    gone = [name for name, entry in ledger.items() if running.get(name) != entry["pid"]]
    for name in gone:
        del ledger[name]
    return gone


def describe(action: dict) -> str:
    card = action["card"]
    nodes = ", ".join(n["name"] for n in action["nodes"] + action["shared"])
    where = "to" if action["op"] == "attach" else "from"
    label = card.get("name") or card["sys_path"]
    return f"{action['op']} card {card['number']} ({label}) {where} guest '{action['guest']}': {nodes}"
