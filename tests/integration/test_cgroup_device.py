"""kiosk.lxc.cgroup_device against the real libvirtd, real guests and this host's cgroup v1.

Each guest's init keeps trying to open() a character node made on the host
(tests/lib/guest.py probe_loop): EPERM while its device cgroup denies the
node, ENXIO once allowed (no driver behind the node). The module runs
through ansible-playbook, as a user runs it.
"""

from __future__ import annotations

from pathlib import Path

import guest as guestlib
import libvirt
import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import hook
from ansible_collections.kiosk.lxc.plugins.module_utils.common.namespaces import DEVICES_NS
from play import run_module

MODULE = "kiosk.lxc.cgroup_device"
ALSA_MAJOR = 116  # CONFIG_SND_MAJOR; no sound driver here, so "alsa" is not in /proc/devices


@pytest.fixture
def probing_guest(libvirt_conn, guest_name, busybox_rootfs):
    """A running guest whose init probes /probe/snd (c 116:77) and /probe/input (c 13:200)."""
    if not Path("/sys/fs/cgroup/devices/machine").is_dir():
        pytest.skip("needs this host's cgroup v1 devices controller (cgroup v2: kiosk VM scenario)")
    root = busybox_rootfs(guestlib.probe_loop(["/probe/snd", "/probe/input"]))
    guestlib.mknod_char(root / "probe" / "snd", ALSA_MAJOR, 77)
    guestlib.mknod_char(root / "probe" / "input", 13, 200)
    dom = libvirt_conn.defineXML(guestlib.domain_xml(guest_name, root))
    dom.create()
    assert "Operation not permitted" in guestlib.probe_result(root, 0, "EPERM")
    assert "Operation not permitted" in guestlib.probe_result(root, 1, "EPERM")
    return dom, root


def devices_list(dom) -> str:
    """The guest's v1 devices.list, found from its controller's /proc entry (libvirt escapes the dir name)."""
    line = next(x for x in Path(f"/proc/{dom.ID()}/cgroup").read_text().splitlines() if ":devices:" in x)
    return Path("/sys/fs/cgroup/devices", line.split(":", 2)[2].lstrip("/"), "devices.list").read_text()


def probe_says(root: Path, index: int, expect: str) -> bool:
    return guestlib.ERRNO_TEXT[expect] in guestlib.probe_result(root, index, expect)


def restart(dom, root: Path) -> None:
    dom.destroy()
    for probe in (root / "out").glob("probe.*"):
        probe.unlink()
    dom.create()


def test_allow_then_deny_on_a_running_guest(probing_guest):
    dom, root = probing_guest
    args = {"domain": dom.name(), "rules": ["c 116:* rw"], "persistent": False}

    check = run_module(MODULE, args, check=True, diff=True)
    assert check["_status"] == "changed", check["_stdout"]
    assert check["added"] == ["c 116:* rw"]
    assert probe_says(root, 0, "EPERM"), "check mode must not change the cgroup"

    real = run_module(MODULE, args)
    assert real["_status"] == "changed", real["_stdout"]
    assert probe_says(root, 0, "ENXIO")
    assert probe_says(root, 1, "EPERM"), "only the given major is opened up"
    assert real["cgroup_version"] == "v1"
    assert real["cgroup_path"].endswith(f"-{dom.name()}.libvirt-lxc")
    assert real["rules"] == check["rules"], "check mode predicted the kernel's list"
    assert real["rules"] == devices_list(dom).splitlines()
    assert real["applied"] is True
    assert real["persistent_rules"] is None

    again = run_module(MODULE, args)
    assert again["_status"] == "ok" and again["added"] == []
    assert run_module(MODULE, args, check=True)["_status"] == "ok"

    gone = run_module(MODULE, {**args, "state": "absent"}, diff=True)
    assert gone["_status"] == "changed", gone["_stdout"]
    assert gone["removed"] == ["c 116:* rw"]
    assert probe_says(root, 0, "EPERM")
    assert "c 116:" not in devices_list(dom)
    assert run_module(MODULE, {**args, "state": "absent"})["_status"] == "ok"


def test_major_by_name_from_proc_devices(probing_guest):
    dom, root = probing_guest
    args = {"domain": dom.name(), "persistent": False, "rules": [{"type": "c", "major": "input", "access": "r"}]}
    result = run_module(MODULE, args)
    assert result["_status"] == "changed", result["_stdout"]
    assert result["added"] == ["c 13:* r"]
    assert probe_says(root, 1, "ENXIO")
    assert probe_says(root, 0, "EPERM")


def test_persistent_rules_come_back_after_a_restart_through_the_hook(probing_guest, libvirt_conn):
    dom, root = probing_guest
    other = f"<keep>{dom.name()}</keep>"
    dom.setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT, other, "x", "urn:someone-else", libvirt.VIR_DOMAIN_AFFECT_CONFIG
    )
    before = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    args = {"domain": dom.name(), "rules": ["c 116:77 r"], "persistent": True}
    running_as = dom.ID()

    check = run_module(MODULE, args, check=True, diff=True)
    result = run_module(MODULE, args, diff=True)
    assert result["_status"] == "changed", result["_stdout"]
    assert (check["actions"], check["persistent_rules"]) == (result["actions"], result["persistent_rules"])
    assert dom.ID() == running_as, "storing the rules does not restart the guest"
    assert result["persistent_rules"] == ["c 116:77 r"]
    assert probe_says(root, 0, "ENXIO")
    assert Path(hook.HOOK_DIR, "lxc.d", hook.HOOK_NAME).is_file()
    after = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert DEVICES_NS in after
    # Only our metadata element was added; someone else's stays.
    assert "urn:someone-else" in after
    assert (
        after.replace(after[after.find("<kioskdev:devices") : after.find("</kioskdev:devices>") + 19], "").split()
        == before.split()
    )
    assert run_module(MODULE, args)["_status"] == "ok"

    restart(dom, root)
    assert probe_says(root, 0, "ENXIO"), "the hook re-applied the stored rule at start"
    assert probe_says(root, 1, "EPERM")

    gone = run_module(MODULE, {**args, "state": "absent"})
    assert gone["_status"] == "changed", gone["_stdout"]
    assert gone["persistent_rules"] == []
    assert probe_says(root, 0, "EPERM")
    assert DEVICES_NS not in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    restart(dom, root)
    assert probe_says(root, 0, "EPERM"), "no stored rule, no access after a restart"


def test_a_stopped_guest_only_gets_the_stored_rules(libvirt_conn, guest_name, busybox_rootfs):
    root = busybox_rootfs(guestlib.probe_loop(["/probe/snd"]))
    guestlib.mknod_char(root / "probe" / "snd", ALSA_MAJOR, 3)
    dom = libvirt_conn.defineXML(guestlib.domain_xml(guest_name, root))
    args = {"domain": guest_name, "rules": [f"c {ALSA_MAJOR}:3 rw"]}
    check = run_module(MODULE, args, check=True)
    assert check["_status"] == "changed" and check["applied"] is False
    result = run_module(MODULE, args)
    assert result["_status"] == "changed", result["_stdout"]
    assert result["applied"] is False and result["cgroup_path"] is None
    assert run_module(MODULE, args)["_status"] == "ok"
    dom.create()
    assert probe_says(root, 0, "ENXIO")


def test_rules_stored_by_earlier_versions_are_kept_and_written_back_alike(libvirt_conn, guest_name, busybox_rootfs):
    """Earlier versions stored the rules with setMetadata; the one writer reads them and writes the same element."""
    dom = libvirt_conn.defineXML(guestlib.domain_xml(guest_name, busybox_rootfs()))
    old = '<devices><rule type="c" major="116" minor="3" access="rw"/></devices>'
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, old, "kioskdev", DEVICES_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG)

    def element() -> list[str]:
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        return xml[xml.find("<kioskdev:devices") : xml.find("</kioskdev:devices>")].split()

    stored_by_old = element()
    args = {"domain": guest_name, "rules": ["c 116:3 rw"]}
    assert run_module(MODULE, args)["_status"] == "ok", "the same rule is no change"
    added = run_module(MODULE, {**args, "rules": ["c 13:* r"]})
    assert added["_status"] == "changed" and added["persistent_rules"] == ["c 116:3 rw", "c 13:* r"]
    back = run_module(MODULE, {**args, "rules": ["c 13:* r"], "state": "absent"})
    assert back["_status"] == "changed" and back["persistent_rules"] == ["c 116:3 rw"]
    assert element() == stored_by_old


BAD = [
    ({"rules": ["c 116 rw"]}, "is not a device rule like 'c 116:* rw'"),
    ({"rules": ["x 116:* rw"]}, "device type 'x' is unknown"),
    ({"rules": ["c 116:* rwx"]}, "access 'rwx' must be made of the letters r, w and m"),
    (
        {"rules": ["c kiosk-no-such-driver:* rw"]},
        "major name 'kiosk-no-such-driver' is not a char device in /proc/devices",
    ),
    ({"rules": ["c 116:* rw"], "cgroup": "/machine"}, "mutually exclusive"),
    ({"rules": ["c 116:* rw"], "domain": "kiosk-no-such-guest"}, "Guest 'kiosk-no-such-guest': no such guest"),
    ({"rules": ["c 116:* rw"], "domain": "test", "uri": "test:///default"}, "Guest 'test' is not an LXC guest"),
]


def test_bad_input_fails_before_anything_is_written(probing_guest):
    dom, root = probing_guest
    before_list = devices_list(dom)
    before_def = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    for args, words in BAD:
        # A good rule before the bad one: it must not be written either.
        result = run_module(MODULE, {"domain": dom.name(), **args, "rules": ["c 116:* rw", *args["rules"]]})
        assert result["_status"] == "failed", (args, result["_stdout"])
        assert words in result["msg"], result["msg"]
        assert devices_list(dom) == before_list
        assert dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == before_def
    assert probe_says(root, 0, "EPERM")
