"""The pure plan of sound_passthrough, applied with lxml to sample domain XML."""

from __future__ import annotations

import copy

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.namespaces import (
    META_NS,
    SOUND_NS,
)
from ansible_collections.kiosk.lxc.plugins.module_utils.sound import plan
from lxml import etree

SEED_LIKE = f"""<domain type='lxc'>
  <name>player1</name>
  <uuid>4c5bbaef-0b21-48b6-bdf9-21a0d0f793df</uuid>
  <metadata><kiosk:meta xmlns:kiosk="{META_NS}"><kiosk:entry key="role">player</kiosk:entry></kiosk:meta></metadata>
  <memory unit='KiB'>4276800</memory>
  <os><type arch='x86_64'>exe</type><init>/lib/systemd/systemd</init></os>
  <devices>
    <emulator>/usr/lib/libvirt/libvirt_lxc</emulator>
    <filesystem type='mount' accessmode='passthrough'>
      <source dir='/var/lib/lxc/player1/rootfs'/>
      <target dir='/'/>
    </filesystem>
    <interface type='bridge'><source bridge='br0'/></interface>
    <console type='pty'/>
  </devices>
</domain>"""


def _root(xml=SEED_LIKE):
    return etree.fromstring(xml, etree.XMLParser(remove_blank_text=True))


def _canon(root) -> bytes:
    return etree.tostring(root, method="c14n")


def _want(two_cards, numbers, profile="udev_data", selectors=None, **kw):
    cards = [c for c in two_cards["cards"] if c["number"] in numbers]
    return plan.desired(
        cards=cards,
        shared_nodes=two_cards["shared_nodes"],
        selectors=selectors,
        profile=profile,
        **kw,
    )


def _applied(root, want):
    plan.make_mutate(want)(root)
    return root


def _hostdev_chars(root):
    return [c.text for c in root.findall("devices/hostdev[@type='misc']/source/char")]


def _fs_targets(root):
    return [(f.get("type"), f.find("target").get("dir")) for f in root.findall("devices/filesystem")]


def test_udev_data_gives_the_chosen_cards_nodes_and_the_shared_ones(two_cards):
    root = _applied(_root(), _want(two_cards, [1], selectors=[{"usb": "0c76:161f"}]))
    assert _hostdev_chars(root) == [
        "/dev/snd/controlC1",
        "/dev/snd/pcmC1D0c",
        "/dev/snd/pcmC1D0p",
        "/dev/snd/seq",
        "/dev/snd/timer",
    ]
    assert all(h.get("mode") == "capabilities" for h in root.findall("devices/hostdev[@type='misc']"))
    # /run gets its own tmpfs BEFORE the read-only bind of the host's udev data.
    assert _fs_targets(root) == [
        ("mount", "/"),
        ("mount", "/dev/snd"),
        ("ram", "/run"),
        ("mount", "/run/udev"),
    ]
    udev = root.findall("devices/filesystem")[3]
    assert udev.find("source").get("dir") == "/run/udev"
    assert udev.find("readonly") is not None
    # host /sys is not passed in with this profile
    assert "/sys" not in [t for _kind, t in _fs_targets(root)]


def test_selectors_are_kept_in_the_sound_metadata_and_other_metadata_stays(two_cards):
    sels = [{"usb": "0c76:161f"}, {"path": "pci-0000:00:1f.3"}]
    root = _applied(_root(), _want(two_cards, [1], selectors=sels, missing="ignore"))
    meta = plan.read_metadata(root)
    assert meta["selectors"] == sels
    assert (meta["profile"], meta["missing"]) == ("udev_data", "ignore")
    assert root.find(f"metadata/{{{META_NS}}}meta/{{{META_NS}}}entry").text == "player"
    assert root.find(f"metadata/{{{SOUND_NS}}}sound").prefix == "kiosksnd"
    # changing our metadata later leaves the other namespaces' alone too
    _applied(root, _want(two_cards, [1], selectors=[{"id": "Audio"}]))
    assert plan.read_metadata(root)["selectors"] == [{"id": "Audio"}]
    assert root.find(f"metadata/{{{META_NS}}}meta/{{{META_NS}}}entry").text == "player"
    assert len(root.findall(f"metadata/{{{SOUND_NS}}}sound")) == 1
    # no selectors = all cards, recorded as such
    root = _applied(_root(), _want(two_cards, [0, 1]))
    assert plan.read_metadata(root)["selectors"] is None


def test_mutate_twice_changes_nothing_the_second_time(two_cards):
    want = _want(two_cards, [1], selectors=[{"id": "Audio"}])
    once = _applied(_root(), want)
    twice = _applied(copy.deepcopy(once), want)
    assert _canon(twice) == _canon(once)


@pytest.mark.parametrize("profile", ["udev_data", "sysfs"])
def test_absent_leaves_the_guest_as_it_was(two_cards, profile):
    root = _applied(_root(), _want(two_cards, [0, 1], profile=profile))
    assert _canon(root) != _canon(_root())
    _applied(root, plan.desired(cards=[], shared_nodes=[], selectors=None, state="absent"))
    assert _canon(root) == _canon(_root())


def test_absent_drops_a_metadata_element_it_created_alone(two_cards):
    bare = SEED_LIKE.replace(
        f'<metadata><kiosk:meta xmlns:kiosk="{META_NS}"><kiosk:entry key="role">player'
        "</kiosk:entry></kiosk:meta></metadata>",
        "",
    )
    root = _applied(_root(bare), _want(two_cards, [1]))
    assert root.find("metadata") is not None
    assert [c.tag for c in root][:3] == ["name", "uuid", "metadata"]
    _applied(root, plan.desired(cards=[], shared_nodes=[], selectors=None, state="absent"))
    assert _canon(root) == _canon(_root(bare))


def test_what_the_user_had_is_not_ours_to_remove(two_cards):
    own = SEED_LIKE.replace(
        "<console type='pty'/>",
        "<filesystem type='mount'><source dir='/sys'/><target dir='/sys'/></filesystem>"
        "<hostdev mode='capabilities' type='misc'><source><char>/dev/snd/timer</char></source>"
        "</hostdev><console type='pty'/>",
    )
    root = _applied(_root(own), _want(two_cards, [1], profile="sysfs"))
    assert _hostdev_chars(root).count("/dev/snd/timer") == 1
    assert [t for _kind, t in _fs_targets(root)].count("/sys") == 1
    _applied(root, plan.desired(cards=[], shared_nodes=[], selectors=None, state="absent"))
    assert _canon(root) == _canon(_root(own))


def test_sysfs_profile_follows_seed_000_and_switching_back_cleans_up(two_cards):
    root = _applied(_root(), _want(two_cards, [1], profile="sysfs"))
    assert _fs_targets(root) == [
        ("mount", "/"),
        ("mount", "/dev/snd"),
        ("mount", "/sys/fs/fuse/connections"),
        ("mount", "/sys"),
    ]
    _applied(root, _want(two_cards, [1]))
    assert _fs_targets(root) == [
        ("mount", "/"),
        ("mount", "/dev/snd"),
        ("ram", "/run"),
        ("mount", "/run/udev"),
    ]


def test_choosing_another_card_swaps_the_nodes(two_cards):
    root = _applied(_root(), _want(two_cards, [1]))
    _applied(root, _want(two_cards, [0]))
    chars = _hostdev_chars(root)
    assert "/dev/snd/controlC0" in chars and "/dev/snd/hwC0D0" in chars
    assert not [c for c in chars if "C1" in c]
    assert chars.count("/dev/snd/timer") == 1


def test_no_card_chosen_gives_no_nodes_but_keeps_the_selectors(two_cards):
    """missing=ignore with the card not plugged in yet: the hotplug agent finds the selectors."""
    root = _applied(_root(), _want(two_cards, [], selectors=[{"serial": "x"}], missing="ignore"))
    assert _hostdev_chars(root) == []
    assert plan.read_metadata(root)["selectors"] == [{"serial": "x"}]


def test_nodes_under_another_dev_dir_are_bound_to_the_guests_dev(two_cards):
    card = copy.deepcopy(two_cards["cards"][1])
    for node in card["nodes"]:
        node["path"] = "/tmp/t/dev" + node["path"][len("/dev") :]
    want = plan.desired(cards=[card], shared_nodes=[], selectors=None, dev_dir="/tmp/t/dev", profile="udev_data")
    root = _applied(_root(), want)
    snd = root.findall("devices/filesystem")[1]
    assert (snd.find("source").get("dir"), snd.find("target").get("dir")) == (
        "/tmp/t/dev/snd",
        "/dev/snd",
    )


def test_networkd_dropin_is_planned_written_and_removed(tmp_path, two_cards):
    root = _root()
    assert plan.guest_rootfs(root) == "/var/lib/lxc/player1/rootfs"
    sysfs = _want(two_cards, [1], profile="sysfs")
    change = plan.plan_dropin(str(tmp_path), sysfs)
    assert change["before"] is None
    plan.apply_dropin(change)
    dropin = tmp_path / plan.NETWORKD_DROPIN
    assert "[Service]\nBindReadOnlyPaths=/sys\n" in dropin.read_text()
    assert plan.plan_dropin(str(tmp_path), sysfs) is None
    assert plan.plan_dropin(str(tmp_path), _want(two_cards, [1])) == {
        "rootfs": str(tmp_path),
        "path": str(dropin),
        "before": plan.NETWORKD_DROPIN_TEXT,
        "content": None,
    }
    plan.apply_dropin(plan.plan_dropin(str(tmp_path), _want(two_cards, [1])))
    assert not dropin.exists()
    assert plan.plan_dropin(None, sysfs) is None
