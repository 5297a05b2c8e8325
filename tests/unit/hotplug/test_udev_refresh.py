"""The agent refreshes a guest's own udev data from the cards present now, once per guest start.

After a host reboot (or with the agent or the guest stopped while a card went
or came back with another number) a guest's directory under
/var/lib/kiosk-lxc/udev still held the records written before: the guest's
libudev then saw a card that is not there, under a device number that may now
be another card's. The directory here is a real one written by sound.udevdata;
the cards are the dicts sound.discovery reports, with udev records made up
for the test (the refresh does not read them; tests/unit/sound/test_udevdata.py
reads real ones under umockdev). No pyudev context is needed for the refresh.
"""

from __future__ import annotations

import os

from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug.agent import Agent, make_logger
from ansible_collections.kiosk.lxc.plugins.module_utils.sound import udevdata

SHARED = [{"name": "timer", "major": 116, "minor": 33, "udev": {"id": "c116:33", "data": "I:1\nV:1\n", "tags": []}}]


def card(number: int, minors: dict, boot: int, usb: dict | None = None) -> dict:
    """A card as discovery reports it, its records stamped with `boot` (as udev's USEC_INITIALIZED is)."""
    nodes = [
        {
            "name": name,
            "major": 116,
            "minor": minor,
            "udev": {"id": f"c116:{minor}", "data": f"I:{boot}\nV:1\n", "tags": []},
        }
        for name, minor in minors.items()
    ]
    data = f"I:{boot}\nE:SOUND_INITIALIZED=1\nG:seat\nQ:seat\nV:1\n"
    return {
        "number": number,
        "id": f"Card{number}",
        "name": f"Card {number}",
        "usb": usb or {},
        "sys_path": f"/sys/devices/x/sound/card{number}",
        "nodes": nodes,
        "udev": {"id": f"+sound:card{number}", "data": data, "tags": ["seat"]},
    }


def listing(directory: str) -> dict:
    data = os.path.join(directory, "data")
    return {name: open(os.path.join(data, name), encoding="utf-8").read() for name in sorted(os.listdir(data))}


def agent(tmp_path) -> Agent:
    return Agent(context=object(), logger=make_logger(str(tmp_path / "agent.log")))


def test_a_card_gone_across_a_reboot_leaves_no_records_and_a_present_one_is_refreshed(tmp_path):
    guest_dir = udevdata.guest_dir(str(tmp_path / "udev"), "player")
    usb = card(1, {"controlC1": 10, "pcmC1D0p": 9}, boot=1, usb={"vendor": "0c76", "product": "161f"})
    onboard_before = card(0, {"controlC0": 7}, boot=1)
    # what the last boot's agent and module left: both cards' records
    udevdata.apply(udevdata.plan(guest_dir, udevdata.records([onboard_before, usb], SHARED)))
    assert "+sound:card1" in listing(guest_dir)
    # this boot: the USB card is gone, the onboard one came back (its record is this boot's)
    onboard = card(0, {"controlC0": 7}, boot=2)
    guests = [{"name": "player", "pid": 4242, "selectors": None, "udev_dir": guest_dir}]
    host = {"cards": [onboard], "shared_nodes": SHARED}

    a = agent(tmp_path)
    a.refresh_udev(guests, host, ready=[onboard])

    assert listing(guest_dir) == {
        "+sound:card0": onboard["udev"]["data"],
        "c116:33": "I:1\nV:1\n",
        "c116:7": "I:2\nV:1\n",
    }
    assert os.listdir(os.path.join(guest_dir, "tags", "seat")) == ["+sound:card0"]
    assert "from the cards present now" in (tmp_path / "agent.log").read_text()


def test_a_wanted_card_udev_has_not_finished_keeps_its_records_and_the_refresh_is_once_per_start(tmp_path):
    guest_dir = udevdata.guest_dir(str(tmp_path / "udev"), "player")
    usb = card(1, {"controlC1": 10}, boot=1, usb={"vendor": "0c76", "product": "161f"})
    udevdata.apply(udevdata.plan(guest_dir, udevdata.records([usb], SHARED)))
    before = listing(guest_dir)
    guests = [{"name": "player", "pid": 4242, "selectors": [{"usb": "0c76:161f"}], "udev_dir": guest_dir}]
    a = agent(tmp_path)

    a.refresh_udev(guests, {"cards": [usb], "shared_nodes": SHARED}, ready=[])  # present, not ready yet
    assert listing(guest_dir) == before

    a.refresh_udev(guests, {"cards": [], "shared_nodes": SHARED}, ready=[])  # the same start: not again
    assert listing(guest_dir) == before

    restarted = [dict(guests[0], pid=4343)]
    a.refresh_udev(restarted, {"cards": [], "shared_nodes": SHARED}, ready=[])
    assert listing(guest_dir) == {}


def test_a_card_the_guest_does_not_want_gets_no_records(tmp_path):
    guest_dir = udevdata.guest_dir(str(tmp_path / "udev"), "player")
    onboard = card(0, {"controlC0": 7}, boot=2)
    guests = [{"name": "player", "pid": 4242, "selectors": [{"usb": "0c76:161f"}], "udev_dir": guest_dir}]
    udevdata.apply(udevdata.plan(guest_dir, udevdata.records([onboard], SHARED)))  # a stale one of card 0

    agent(tmp_path).refresh_udev(guests, {"cards": [onboard], "shared_nodes": SHARED}, ready=[onboard])

    assert listing(guest_dir) == {}
