"""Card discovery through pyudev, against a hand-written umockdev recording.

The recording (tests/fixtures/umockdev/two_cards.umockdev) holds an onboard
HDA card 0 on PCI and seed 000's USB card 1 (0c76:161f "KT USB Audio",
serial 20180301) behind its USB interface and device, plus the shared
timer and seq nodes. pyudev reads it through libudev exactly as on a host.
"""

from __future__ import annotations

from ansible_collections.kiosk.lxc.plugins.module_utils.sound import discovery


def _card(found, number):
    return next(c for c in found["cards"] if c["number"] == number)


def _nodes(card):
    return {n["name"]: (n["path"], n["major"], n["minor"]) for n in card["nodes"]}


def test_finds_both_cards_with_their_identity(two_cards):
    assert [c["number"] for c in two_cards["cards"]] == [0, 1]
    usb = _card(two_cards, 1)
    assert usb["id"] == "Audio"
    assert usb["name"] == "KT USB Audio"
    assert usb["driver"] == "snd-usb-audio"
    assert usb["usb"] == {
        "vendor": "0c76",
        "product": "161f",
        "serial": "20180301",
        "name": "KT USB Audio",
    }
    assert usb["path"] == "platform-xhci-hcd.0.auto-usb-0:1:1.0"
    onboard = _card(two_cards, 0)
    assert (onboard["id"], onboard["driver"], onboard["usb"]) == ("PCH", "snd_hda_intel", None)
    assert onboard["path"] == "pci-0000:00:1f.3"
    # Without /proc/asound/cards, the PCI model from the hwdb stands in for the name.
    assert onboard["name"] == "Cannon Lake PCH cAVS"


def test_each_card_gets_exactly_its_own_nodes_with_major_minor(two_cards):
    assert _nodes(_card(two_cards, 1)) == {
        "controlC1": ("/dev/snd/controlC1", 116, 10),
        "pcmC1D0c": ("/dev/snd/pcmC1D0c", 116, 8),
        "pcmC1D0p": ("/dev/snd/pcmC1D0p", 116, 9),
    }
    assert sorted(_nodes(_card(two_cards, 0))) == [
        "controlC0",
        "hwC0D0",
        "midiC0D0",
        "pcmC0D0c",
        "pcmC0D0p",
    ]


def test_timer_and_seq_are_shared_not_a_cards(two_cards):
    assert [(n["name"], n["path"], n["major"], n["minor"]) for n in two_cards["shared_nodes"]] == [
        ("seq", "/dev/snd/seq", 116, 1),
        ("timer", "/dev/snd/timer", 116, 33),
    ]


def test_proc_names_and_dev_dir_are_taken_as_arguments(umockdev, tmp_path):
    (tmp_path / "proc" / "asound").mkdir(parents=True)
    (tmp_path / "proc" / "asound" / "cards").write_text(
        " 0 [PCH            ]: HDA-Intel - HDA Intel PCH\n"
        "                      HDA Intel PCH at 0xf7f10000 irq 32\n"
        " 1 [Audio          ]: USB-Audio - KT USB Audio\n"
        "                      KTMicro KT USB Audio at usb-xhci-hcd.0.auto-1, full speed\n"
    )
    found = umockdev.run_json(
        umockdev.TWO_CARDS,
        "from ansible_collections.kiosk.lxc.plugins.module_utils.sound import discovery\n"
        f"print(json.dumps(discovery.discover(proc_root={str(tmp_path / 'proc')!r},"
        f" dev_dir={str(tmp_path / 'dev')!r})))",
    )
    assert _card(found, 0)["name"] == "HDA Intel PCH"
    assert _nodes(_card(found, 1))["controlC1"][0] == f"{tmp_path}/dev/snd/controlC1"
    assert found["shared_nodes"][1]["path"] == f"{tmp_path}/dev/snd/timer"


def test_read_proc_cards_parses_the_kernel_format(tmp_path):
    (tmp_path / "asound").mkdir()
    (tmp_path / "asound" / "cards").write_text(
        " 1 [Audio          ]: USB-Audio - KT USB Audio\n"
        "                      KTMicro KT USB Audio at usb-xhci-hcd.0.auto-1, full speed\n"
    )
    assert discovery.read_proc_cards(str(tmp_path)) == {
        1: {"id": "Audio", "alsa_driver": "USB-Audio", "name": "KT USB Audio"}
    }
    assert discovery.read_proc_cards(str(tmp_path / "none")) == {}


# A USB device names its card: iProduct becomes the short name and iManufacturer starts the long
# name, and neither is checked for a newline. This long name makes the rest of its string read as
# two lines of card 0, naming it "Lobby Speaker" (the name a guest selected another card by).
FORGED_CARDS = (
    " 0 [PCH            ]: HDA-Intel - HDA Intel PCH\n"
    "                      HDA Intel PCH at 0xf7f10000 irq 32\n"
    " 1 [Audio          ]: USB-Audio - KT USB Audio\n"
    "                      KTMicro\n"
    " 0 [PCH            ]: HDA-Intel - Lobby Speaker\n"
    "                      Lobby Speaker KT USB Audio at usb-xhci-hcd.0.auto-1, full speed\n"
)


def test_a_forged_card_line_names_no_card(umockdev, tmp_path):
    """The attack for real on the parse: the file a device with a newline in its strings makes."""
    (tmp_path / "proc" / "asound").mkdir(parents=True)
    (tmp_path / "proc" / "asound" / "cards").write_text(FORGED_CARDS)
    found = umockdev.run_json(
        umockdev.TWO_CARDS,
        "from ansible_collections.kiosk.lxc.plugins.module_utils.sound import discovery\n"
        "import json\n"
        f"print(json.dumps(discovery.discover(proc_root={str(tmp_path / 'proc')!r})))",
    )
    names = {c["number"]: c["name"] for c in found["cards"]}
    assert "Lobby Speaker" not in names.values()
    # The file is refused as a whole: both cards are named from udev, as with no file at all.
    assert names == {0: "Cannon Lake PCH cAVS", 1: "KT USB Audio"}
