"""kiosk.lxc.sound_passthrough through ansible-playbook, against the real libvirtd.

Udev's view of the host is the umockdev recording of an onboard card 0 and
seed 000's USB card 1 (ansible-playbook runs under umockdev-run); the card
nodes are real `mknod` nodes (major 116, no driver) made with the
recording's numbers under the test's own directory, which the module is
told with host_dev_dir - so nothing is created in the host's /dev or
/run/udev on this shared machine, and libvirtd stats real nodes. The guest
probes from inside (its init): the chosen card's nodes give ENXIO, the
other card's EPERM.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import guest as guestlib
import libvirt
import pytest
from lxml import etree

_spec = importlib.util.spec_from_file_location(
    "umock", Path(__file__).resolve().parents[1] / "fixtures" / "umockdev" / "umock.py"
)
umock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(umock)

pytestmark = pytest.mark.skipif(not umock.available(), reason="umockdev-run is missing")

PROBES = ["/dev/snd/controlC1", "/dev/snd/pcmC1D0p", "/dev/snd/seq", "/dev/snd/controlC0"]
# minor of every node in the recording (all have the ALSA major 116)
NODES = {
    "controlC0": 7, "hwC0D0": 5, "midiC0D0": 6, "pcmC0D0p": 4, "pcmC0D0c": 3,
    "controlC1": 10, "pcmC1D0p": 9, "pcmC1D0c": 8, "seq": 1, "timer": 33,
}  # fmt: skip


MODULE = "kiosk.lxc.sound_passthrough"


def run(args: dict, *, check: bool = False, diff: bool = False) -> dict:
    return runs([(args, check, diff)])[0]


def runs(steps: list[tuple[dict, bool, bool]]) -> list[dict]:
    """Several module runs (args, check, diff) in one ansible-playbook start."""
    tasks = [{MODULE: args, "check_mode": check, "diff": diff} for args, check, diff in steps]
    return umock.run_tasks(umock.TWO_CARDS, tasks)


@pytest.fixture
def fake_host(tmp_path):
    for name, minor in NODES.items():
        guestlib.mknod_char(tmp_path / "dev" / "snd" / name, 116, minor, 0o660)
    (tmp_path / "run" / "udev" / "data").mkdir(parents=True)
    return {
        "host_dev_dir": str(tmp_path / "dev"),
        "host_udev_dir": str(tmp_path / "run" / "udev"),
        "udev_data_dir": str(tmp_path / "udev-data"),
        # busybox's init ignores the shutdown request: do not wait 30 s to destroy it
        "shutdown_timeout": 1,
    }


def _stored(conn, name):
    return conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def test_check_real_check_real_then_absent(libvirt_conn, guest_name, busybox_rootfs, fake_host):
    root = busybox_rootfs(guestlib.probe_loop(PROBES))
    dom = libvirt_conn.defineXML(guestlib.domain_xml(guest_name, root))
    dom.create()
    assert guestlib.probe_result(root, 0, "ENOENT").endswith(guestlib.ERRNO_TEXT["ENOENT"])
    original = _stored(libvirt_conn, guest_name)
    args = dict(fake_host, domain=guest_name, cards=[{"usb": "0c76:161f"}])

    checked, real, rechecked, again = runs(
        [(args, True, True), (args, False, False), (args, True, False), (args, False, False)]
    )
    assert checked["_status"] == "changed", checked
    # the guest's own udev data: card 1, its three nodes and the shared seq and timer, and nothing else
    udev = f"write the udev data of 6 and remove that of 0 devices in {fake_host['udev_data_dir']}/{guest_name}"
    assert checked["actions"] == [udev, "define", "restart"]
    assert "controlC1" in checked["diff"][0]["after"] and "controlC1" not in checked["diff"][0]["before"]
    assert real["_status"] == "changed", real
    assert real["actions"] == checked["actions"] and real["restarted"] is True
    assert [c["number"] for c in real["cards"]] == [1]
    assert rechecked["_status"] == "ok" and rechecked["actions"] == []
    assert again["_status"] == "ok" and again["actions"] == []

    for i in (0, 1, 2):
        got = guestlib.probe_result(root, i, "ENXIO")
        assert guestlib.ERRNO_TEXT["ENXIO"] in got, (PROBES[i], got)
    got = guestlib.probe_result(root, 3, "EPERM")
    assert guestlib.ERRNO_TEXT["EPERM"] in got, (PROBES[3], got)

    absent = dict(fake_host, domain=guest_name, state="absent")
    gone, gone_again = runs([(absent, False, False), (absent, False, False)])
    assert gone["_status"] == "changed" and gone["restarted"] is True
    assert gone["actions"][-1] == f"remove the guest's udev data {fake_host['udev_data_dir']}/{guest_name}"
    assert gone_again["_status"] == "ok"
    assert etree.tostring(etree.fromstring(_stored(libvirt_conn, guest_name)), method="c14n") == (
        etree.tostring(etree.fromstring(original), method="c14n")
    )
    # the restarted guest has neither the node nor the bind any more
    assert guestlib.ERRNO_TEXT["ENOENT"] in guestlib.probe_result(root, 0, "ENOENT")


def test_missing_card_fails_listing_the_cards_and_touches_nothing(libvirt_conn, guest_name, busybox_rootfs, fake_host):
    root = busybox_rootfs()
    libvirt_conn.defineXML(guestlib.domain_xml(guest_name, root))
    original = _stored(libvirt_conn, guest_name)
    nope = dict(fake_host, domain=guest_name, cards=[{"serial": "nope"}])
    failed = run(nope)
    assert failed["_status"] == "failed"
    assert failed["msg"].startswith("No sound card matches {serial: nope}: the host has card 0 (")
    assert "card 1 (usb: 0c76:161f" in failed["msg"]
    assert _stored(libvirt_conn, guest_name) == original

    ignored = run(dict(nope, missing="ignore"))
    assert ignored["_status"] == "changed" and ignored["nodes"] == []
    assert ignored["unmatched"] == [{"serial": "nope"}]
    assert 'serial="nope"' in _stored(libvirt_conn, guest_name)


def test_sysfs_profile_writes_the_networkd_dropin(libvirt_conn, guest_name, busybox_rootfs, fake_host):
    root = busybox_rootfs("mount > /out/mounts.tmp && mv /out/mounts.tmp /out/mounts")
    libvirt_conn.defineXML(guestlib.domain_xml(guest_name, root))
    dropin = root / "etc/systemd/system/systemd-networkd.service.d/kiosk-sound-sysfs.conf"
    args = dict(fake_host, domain=guest_name, cards=[{"id": "PCH"}], profile="sysfs")
    checked = run(args, check=True)
    assert checked["_status"] == "changed" and checked["actions"][0] == f"write {dropin}"
    assert not dropin.exists()
    real, again = runs([(args, False, False), (args, False, False)])
    assert real["_status"] == "changed" and again["_status"] == "ok"
    assert "BindReadOnlyPaths=/sys" in dropin.read_text()
    targets = [t.get("dir") for t in etree.fromstring(_stored(libvirt_conn, guest_name)).iter("target")]
    assert "/sys" in targets and "/run/udev" not in targets
    # libvirt starts it, with the host's /sys read-write on top of its own read-only one
    libvirt_conn.lookupByName(guest_name).create()
    assert "sysfs on /sys type sysfs (rw" in guestlib.wait_for_file(root / "out" / "mounts")
    gone = run(dict(fake_host, domain=guest_name, state="absent"))
    assert gone["_status"] == "changed" and gone["actions"][0] == f"remove {dropin}"
    assert not dropin.exists()


def test_bad_input_fails_before_anything(libvirt_conn, guest_name, busybox_rootfs, tmp_path):
    libvirt_conn.defineXML(guestlib.domain_xml(guest_name, busybox_rootfs()))
    original = _stored(libvirt_conn, guest_name)
    no_udev, bad = runs(
        [
            ({"domain": guest_name, "host_udev_dir": str(tmp_path / "nothing")}, False, False),
            ({"domain": guest_name, "cards": [{"usb": "0c76"}], "profile": "sysfs"}, False, False),
        ]
    )
    assert no_udev["_status"] == "failed"
    assert no_udev["msg"].startswith("Option profile: udev_data binds the host's udev data")
    assert bad["_status"] == "failed" and bad["msg"].startswith("Option cards: usb '0c76'")
    assert _stored(libvirt_conn, guest_name) == original
