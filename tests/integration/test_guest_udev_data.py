"""A guest's /run/udev holds its own cards' udev records, not the host's whole database.

The host's udev data (a real /run/udev-shaped tree the test makes, as
sound_passthrough's host_udev_dir) holds the guest's card and a disk whose
ID_SERIAL is a secret; umockdev's testbed (the recording of two cards plus
that disk) is what pyudev reads, as udev's database on a real host. A busybox
guest on the real libvirtd, configured by kiosk.lxc.sound_passthrough with
the default profile udev_data, lists and reads its /run/udev from inside
(busybox has no udevadm: the assertions are on the files libudev would read
for an enumeration, data/<id> by the device's id). The hotplug agent adds a
hot-plugged card's records to a running guest and takes them away again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import guest as guestlib
import hotplug_lab as lab
import pytest

pytestmark = pytest.mark.skipif(
    not (shutil.which("umockdev-wrapper") and os.path.exists("/usr/lib/x86_64-linux-gnu/girepository-1.0")),
    reason="umockdev-wrapper or GObject introspection (gir1.2-umockdev-1.0, python3-gi) is missing",
)

SECRET = "WD-WCC6Y1KSECRET"
DISK = (
    "P: /devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda\n"
    "N: sda\n"
    "E: DEVNAME=/dev/sda\n"
    "E: DEVTYPE=disk\n"
    "E: SUBSYSTEM=block\n"
    "E: MAJOR=8\n"
    "E: MINOR=0\n"
    f"E: ID_SERIAL=WDC_WD10EZEX_{SECRET}\n"
    f"E: ID_SERIAL_SHORT={SECRET}\n"
    "A: dev=8:0\n"
)
DEFAULT_ROOT = Path("/var/lib/kiosk-lxc/udev")
# The guest's init shows its /run/udev once it is there (after sound_passthrough restarted it).
SHOW = (
    "(while ! ls /run/udev/data >/dev/null 2>&1; do sleep 0.1; done; sleep 0.3\n"
    " ls /run/udev/data > /out/ls.tmp; mv /out/ls.tmp /out/ls\n"
    " cat /run/udev/data/* > /out/all.tmp 2>&1; mv /out/all.tmp /out/all\n"
    " cat /run/udev/data/+sound:card0 > /out/card0.tmp 2>&1; mv /out/card0.tmp /out/card0) &\n"
)


@pytest.fixture
def fake_host(tmp_path):
    host = lab.make_fake_host(tmp_path)
    host["recording"].write_text(host["recording"].read_text() + "\n" + DISK)
    data = host["udev"] / "data"  # the host's /run/udev: what udev wrote for every device
    (data / "+sound:card0").write_text("I:1000\nE:SOUND_INITIALIZED=1\nE:ID_PATH=pci-0000:00:1f.3\nV:1\n")
    (data / "c116:7").write_text("I:1000\nV:1\n")
    (data / "b8:0").write_text(f"I:1000\nE:ID_SERIAL=WDC_WD10EZEX_{SECRET}\nE:ID_SERIAL_SHORT={SECRET}\nV:1\n")
    return host


@contextlib.contextmanager
def default_root_removed_after():
    """sound_passthrough's default udev_data_dir, removed again if this test made it."""
    made = not DEFAULT_ROOT.exists()
    try:
        yield
    finally:
        if made and DEFAULT_ROOT.is_dir():
            shutil.rmtree(DEFAULT_ROOT)


def test_the_guest_sees_its_cards_records_and_no_other_devices(libvirt_conn, guest_name, busybox_rootfs, fake_host):
    root = busybox_rootfs(SHOW)
    libvirt_conn.defineXML(guestlib.domain_xml(guest_name, root)).create()
    args = {
        "domain": guest_name,
        "cards": [{"id": "PCH"}],
        "host_dev_dir": str(fake_host["dev"]),
        "host_udev_dir": str(fake_host["udev"]),
        "shutdown_timeout": 1,
    }
    with default_root_removed_after():
        (result,) = lab.umock.run_tasks(fake_host["recording"], [{"kiosk.lxc.sound_passthrough": args}])
        assert result["_status"] == "changed", result
        listed = guestlib.wait_for_file(root / "out" / "ls").split()
        everything = guestlib.wait_for_file(root / "out" / "all")
        card0 = guestlib.wait_for_file(root / "out" / "card0")
        (gone,) = lab.umock.run_tasks(
            fake_host["recording"], [{"kiosk.lxc.sound_passthrough": dict(args, state="absent")}]
        )
        assert gone["_status"] == "changed", gone
        left = (DEFAULT_ROOT / guest_name).exists()
    assert SECRET not in everything, f"the guest reads the host's disk serial in its /run/udev: {listed}"
    assert "b8:0" not in listed, listed
    assert "+sound:card0" in listed and "c116:7" in listed, listed  # its card and the card's control node
    assert "E:SOUND_INITIALIZED=1" in card0.splitlines(), card0
    assert not left, "state=absent left the guest's udev data behind"


def test_the_agent_adds_and_removes_a_hotplugged_cards_records(libvirt_conn, guest_name, busybox_rootfs, fake_host):
    watch = (
        "(while true; do if cat /run/udev/data/+sound:card1 > /out/card1.tmp 2>&1; then :; fi;"
        " mv /out/card1.tmp /out/card1; sleep 0.05; done) &\n"
    )
    root = busybox_rootfs(watch + guestlib.probe_loop(["/dev/snd/controlC1"], interval=0.05))
    lab.start_guests(libvirt_conn, fake_host, {guest_name: (root, {"usb": "0c76:161f"})})
    agent = lab.Lab(fake_host["dev"], fake_host["tmp"] / "hotplug.log", only=[guest_name])
    try:
        lab.plug_nodes(fake_host, True)
        assert agent.plug()["ledger"] == [guest_name], agent.log()
        plugged = wait_for_text(root / "out" / "card1", "SOUND_INITIALIZED=1")
        agent.unplug()
        lab.plug_nodes(fake_host, False)
        unplugged = wait_for_text(root / "out" / "card1", "No such file")
    finally:
        agent.close()
    assert "E:SOUND_INITIALIZED=1" in plugged.splitlines(), (plugged, agent.log())
    assert "No such file" in unplugged, unplugged


def wait_for_text(path: Path, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            last = path.read_text(errors="replace")
            if text in last:
                return last
        time.sleep(0.05)
    return last


def test_the_records_of_a_card_gone_while_no_agent_ran_go_when_the_agent_starts(
    libvirt_conn, guest_name, busybox_rootfs, fake_host
):
    """A host reboot, as a guest's own udev data lives through it: the agent that wrote a plugged card's
    records stops, the card goes while no agent runs, and the next agent's first rescan removes them
    (they stayed until the next plug before: the guest's libudev listed a card that was not there)."""
    watch = (
        "(while true; do if cat /run/udev/data/+sound:card1 > /out/card1.tmp 2>&1; then :; fi;"
        " mv /out/card1.tmp /out/card1; sleep 0.05; done) &\n"
    )
    root = busybox_rootfs(watch + guestlib.probe_loop(["/dev/snd/controlC1"], interval=0.05))
    lab.start_guests(libvirt_conn, fake_host, {guest_name: (root, {"usb": "0c76:161f"})})
    data = fake_host["tmp"] / "udev-data" / guest_name / "data"
    agent = lab.Lab(fake_host["dev"], fake_host["tmp"] / "hotplug.log", only=[guest_name])
    try:
        lab.plug_nodes(fake_host, True)
        assert agent.plug()["ledger"] == [guest_name], agent.log()
        plugged = wait_for_text(root / "out" / "card1", "SOUND_INITIALIZED=1")
    finally:
        agent.close()
    written = sorted(os.listdir(data))
    lab.plug_nodes(fake_host, False)  # the card went while no agent ran; the next agent's host has none
    agent = lab.Lab(fake_host["dev"], fake_host["tmp"] / "hotplug2.log", only=[guest_name], rescan=0.2)
    try:
        deadline = time.monotonic() + 10
        while "+sound:card1" in os.listdir(data) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = sorted(os.listdir(data))
        seen = wait_for_text(root / "out" / "card1", "No such file", timeout=2)
        log = agent.log()
    finally:
        agent.close()
    assert "E:SOUND_INITIALIZED=1" in plugged.splitlines(), plugged
    assert "+sound:card1" in written and "c116:10" in written, written
    assert left == [], f"records of the card gone while no agent ran are still there: {left}; agent: {log}"
    assert "No such file" in seen, seen
