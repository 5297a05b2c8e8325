"""The one parser each of mountinfo, /proc/devices and /proc/asound/cards, on files the tests write."""

from __future__ import annotations

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common import procfs

CARDS = (
    " 0 [PCH            ]: HDA-Intel - HDA Intel PCH\n"
    "                      HDA Intel PCH at 0xf7f10000 irq 32\n"
    "10 [Audio          ]: USB-Audio - KT USB Audio\n"
    "                      KTMicro KT USB Audio at usb-xhci-hcd.0.auto-1, full speed\n"
)


def test_cards_are_index_line_and_description_line():
    assert procfs.parse_asound_cards(CARDS) == {
        0: {"id": "PCH", "alsa_driver": "HDA-Intel", "name": "HDA Intel PCH"},
        10: {"id": "Audio", "alsa_driver": "USB-Audio", "name": "KT USB Audio"},
    }
    assert procfs.parse_asound_cards("--- no soundcards ---\n") == {}


@pytest.mark.parametrize(
    "forged",
    [
        # a description that goes on as an earlier card's two lines (a newline in iManufacturer)
        CARDS.replace("KTMicro ", "KTMicro\n 0 [PCH            ]: HDA-Intel - Lobby\n                      x "),
        # ... as a later card's lines: the real card of that number then comes twice
        CARDS.replace("irq 32", "irq 32\n10 [Audio          ]: USB-Audio - Lobby\n                      x"),
        # a short name (iProduct) with a newline: its rest takes the description's place
        CARDS.replace("- KT USB Audio", "- KT\n 3 [Fake           ]: X - Lobby"),
        # an escape sequence or a carriage return in a name
        CARDS.replace("KT USB Audio\n", "KT \x1b[2K USB Audio\n", 1),
        CARDS.replace("KT USB Audio\n", "KT\r 0 [PCH ]: HDA-Intel - Lobby\n", 1),
    ],
)
def test_a_forged_cards_file_is_refused_as_a_whole(forged):
    assert procfs.parse_asound_cards(forged) == {}


def test_cards_file_missing_is_no_cards(tmp_path):
    assert procfs.asound_cards(str(tmp_path / "cards")) == {}


def test_mountinfo_fields_and_escaped_paths(tmp_path):
    path = tmp_path / "mountinfo"
    path.write_text(
        "35 24 0:30 / /sys/fs/cgroup/devices rw,nosuid - cgroup cgroup rw,devices\n"
        "36 24 0:31 / /sys/fs/cgroup/unified rw shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
        "40 24 8:1 / /srv/with\\040space rw - ext4 /dev/sda1 rw\n"
    )
    mounts = procfs.mountinfo(str(path))
    assert [(m.mountpoint, m.fstype) for m in mounts] == [
        ("/sys/fs/cgroup/devices", "cgroup"),
        ("/sys/fs/cgroup/unified", "cgroup2"),
        ("/srv/with space", "ext4"),
    ]
    assert "devices" in mounts[0].super_options


def test_proc_devices_sections(tmp_path):
    path = tmp_path / "devices"
    path.write_text("Character devices:\n  1 mem\n116 alsa\n\nBlock devices:\n  8 sd\n259 blkext\n")
    assert procfs.proc_devices(str(path)) == {
        "char": {"mem": [1], "alsa": [116]},
        "block": {"sd": [8], "blkext": [259]},
    }
