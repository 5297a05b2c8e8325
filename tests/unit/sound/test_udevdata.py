"""A guest's own udev data: records read by pyudev under umockdev, written to a real directory.

The recording (two cards) gets a disk with a serial and a card property
holding control characters (a tab and an escape sequence; the recording
format cannot hold a newline): the records hold card 1 and its nodes, the
disk's serial nowhere, and the control characters never.
"""

from __future__ import annotations

import os

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.sound import udevdata

DISK = (
    "P: /devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda\n"
    "N: sda\nE: DEVNAME=/dev/sda\nE: DEVTYPE=disk\nE: SUBSYSTEM=block\nE: MAJOR=8\nE: MINOR=0\n"
    "E: ID_SERIAL_SHORT=WD-SECRET\nA: dev=8:0\n"
)


@pytest.fixture(scope="module")
def found(umockdev, tmp_path_factory):
    recording = tmp_path_factory.mktemp("rec") / "rec.umockdev"
    text = umockdev.TWO_CARDS.read_text().replace(
        "E: SOUND_INITIALIZED=1\n", "E: SOUND_INITIALIZED=1\nE: FORGED=x\ty\x1b[2J\n", 1
    )
    recording.write_text(text + "\n" + DISK)
    return umockdev.run_json(
        recording,
        "from ansible_collections.kiosk.lxc.plugins.module_utils.sound import discovery\n"
        "print(json.dumps(discovery.discover(proc_root='/nonexistent', records=True)))",
    )


def _card(found, number):
    return next(c for c in found["cards"] if c["number"] == number)


def test_the_records_are_the_cards_its_nodes_and_the_shared_ones(found):
    want = udevdata.records([_card(found, 1)], found["shared_nodes"])
    assert sorted(want) == ["+sound:card1", "c116:1", "c116:10", "c116:33", "c116:8", "c116:9"]
    assert "E:SOUND_INITIALIZED=1" in want["+sound:card1"]["data"].splitlines()
    assert all("SECRET" not in r["data"] and "DEVNAME" not in r["data"] for r in want.values())
    assert udevdata.records([], found["shared_nodes"]) == {}  # no card, no shared nodes either


def test_a_value_with_control_characters_is_left_out(found):
    lines = [line for c in found["cards"] for line in c["udev"]["data"].splitlines()]
    assert "E:SOUND_INITIALIZED=1" in lines and not any(line.startswith("E:FORGED") for line in lines), lines


def test_plan_apply_is_idempotent_and_removes_what_is_no_longer_given(found, tmp_path):
    guest = udevdata.guest_dir(str(tmp_path / "udev"), "player")
    both = udevdata.records([_card(found, 0), _card(found, 1)], found["shared_nodes"])
    change = udevdata.plan(guest, both)
    assert udevdata.apply(change) == [udevdata.describe(change)]
    assert udevdata.plan(guest, both) is None
    assert (tmp_path / "udev" / "player" / "data" / "+sound:card0").read_text() == both["+sound:card0"]["data"]
    only1 = udevdata.records([_card(found, 1)], found["shared_nodes"])
    change = udevdata.plan(guest, only1)
    assert change["write"] == {} and "+sound:card0" in change["remove"] and "c116:7" in change["remove"]
    udevdata.apply(change)
    assert sorted(os.listdir(tmp_path / "udev" / "player" / "data")) == sorted(only1)
    udevdata.apply(udevdata.plan(guest, None))
    assert not (tmp_path / "udev" / "player").exists()
    assert udevdata.plan(guest, None) is None


def test_a_link_on_the_way_is_refused_not_followed(found, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "udev").mkdir()
    (tmp_path / "udev" / "player").symlink_to(tmp_path / "elsewhere")
    guest = udevdata.guest_dir(str(tmp_path / "udev"), "player")
    with pytest.raises(KioskError, match="symbolic link"):
        udevdata.apply(udevdata.plan(guest, udevdata.records([_card(found, 1)], [])))
    assert os.listdir(tmp_path / "elsewhere") == []


def test_a_guest_name_that_is_not_a_file_name_is_refused():
    for bad in ("..", "a/b", "x\n"):
        with pytest.raises(KioskError, match="Option domain"):
            udevdata.guest_dir("/var/lib/kiosk-lxc/udev", bad)
