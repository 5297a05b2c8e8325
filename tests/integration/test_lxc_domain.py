"""kiosk.lxc.lxc_domain and lxc_domain_info through ansible-playbook, against the real libvirtd.

Every change is run check -> real -> check -> real and must report changed,
changed, not changed, not changed; the check run must leave libvirt as it was.
Guests are busybox rootfs from the harness; a guest that must stop gracefully
runs an init that exits on SIGTERM (libvirt's LXC shutdown signal).
"""

from __future__ import annotations

import json
import subprocess
import time

import guest as guestlib
import libvirt
import play
import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import manage

MODULE = "kiosk.lxc.lxc_domain"
# Exits on SIGTERM within ~0.1 s. lxc_domain sends it after the first half of
# shutdown_timeout (libvirt's default shutdown does not signal a busybox init).
TERM_INIT = "trap 'exit 0' TERM\nwhile true; do sleep 0.1; done"
OTHER_NS = "http://example.org/some-other-tool"


def run(args: dict, *, check: bool = False, diff: bool = False) -> dict:
    return play.run_module(MODULE, args, check=check, diff=diff)


def stored(conn, name: str) -> str | None:
    try:
        return conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    except libvirt.libvirtError:
        return None


def dom_id(conn, name: str) -> int:
    return conn.lookupByName(name).ID()


def check_real_check_real(conn, name: str, args: dict) -> list[dict]:
    """The four runs every change must pass; returns their results."""
    before = stored(conn, name)
    runs = []
    for check in (True, False, True, False):
        runs.append(run(args, check=check, diff=check))
        if check and len(runs) == 1:
            assert stored(conn, name) == before, "the check run changed the stored definition"
    statuses = [r["_status"] for r in runs]
    assert statuses == ["changed", "changed", "ok", "ok"], [r.get("msg") for r in runs]
    assert runs[0]["actions"] == runs[1]["actions"], "check mode and the real run disagree"
    assert runs[2]["actions"] == runs[3]["actions"] == []
    return runs


@pytest.fixture
def bridge(guest_name):
    """A bridge of this test's own (no address, no traffic leaves it)."""
    name = f"{guest_name.split('-')[0]}b{guest_name.rsplit('-', 1)[1]}"[:15]
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    yield name
    subprocess.run(["ip", "link", "del", name], check=False)


def make_guest(conn, name: str, root, **extra) -> dict:
    """A guest set up without Ansible (the code under test, called directly)."""
    params = {"name": name, "rootfs": str(root), "init": "/init", "memory": 64, **extra}
    params.setdefault("shutdown_timeout", 2)
    return manage.ensure(conn, params)


def test_create_and_start_then_nothing_to_do(libvirt_conn, guest_name, busybox_rootfs, tmp_path, bridge):
    node = guestlib.mknod_char(tmp_path / "dev" / "fakesnd", 116, 77)
    shared = tmp_path / "shared"
    shared.mkdir()
    root = busybox_rootfs(f"mount > /out/mounts\n{guestlib.probe_loop(['/probe/snd'])}\n{TERM_INIT}")
    guestlib.mknod_char(root / "probe" / "snd", 116, 77)  # the same device, seen in the guest
    args = {
        "name": guest_name,
        "rootfs": str(root),
        "init": "/init",
        "memory": "64MiB",
        "autostart": True,
        "capabilities": {"add": ["sys_nice"], "drop": ["sys_module"]},
        "filesystems": [
            {"type": "ram", "target": "/run", "size": "8MiB"},
            {"source": str(shared), "target": "/mnt/shared", "readonly": True},
        ],
        "interfaces": [{"bridge": bridge}],  # no MAC: libvirt's must be kept on re-runs
        "hostdevs": [str(node)],
        "metadata": {"role": "player"},
        "shutdown_timeout": 5,
    }
    runs = check_real_check_real(libvirt_conn, guest_name, args)
    assert runs[0]["actions"] == ["define", "start", "autostart_on"]
    assert f"+++ after: {guest_name} (stored definition)" in runs[0]["_stdout"]  # --diff
    assert runs[1]["state"] == "running" and runs[1]["uuid"]
    dom = libvirt_conn.lookupByName(guest_name)
    assert dom.isActive() and dom.autostart()
    # The busybox init really runs as the guest's pid 1, with the asked-for mounts.
    assert guestlib.wait_for_file(root / "out" / "started") == "1"
    mounts = guestlib.wait_for_file(root / "out" / "mounts")
    assert " /run type tmpfs" in mounts
    assert " /mnt/shared " in mounts
    # The hostdev is allowed in the guest's device cgroup: open() gets past EPERM.
    assert guestlib.ERRNO_TEXT["ENXIO"] in guestlib.probe_result(root, 0, "ENXIO")
    # The MAC libvirt generated stayed through the no-op runs.
    assert runs[3]["xml"] == stored(libvirt_conn, guest_name)
    assert "<mac address=" in runs[3]["xml"]


def test_restart_on_change_and_restart_never(libvirt_conn, guest_name, busybox_rootfs):
    root = busybox_rootfs(TERM_INIT)
    make_guest(libvirt_conn, guest_name, root)
    first_id = dom_id(libvirt_conn, guest_name)
    args = {"name": guest_name, "memory": "128MiB", "shutdown_timeout": 2}

    runs = check_real_check_real(libvirt_conn, guest_name, args)
    assert runs[0]["actions"] == ["define", "restart"] and runs[0]["restarted"]
    assert runs[0]["changes"] == ["memory", "currentMemory"]
    assert runs[1]["restarted"] and not runs[1]["forced_stop"]  # init left on SIGTERM
    second_id = dom_id(libvirt_conn, guest_name)
    assert second_id != first_id, "the guest was not restarted"
    assert "<memory unit='KiB'>131072</memory>" in stored(libvirt_conn, guest_name)

    never = run({**args, "memory": "96MiB", "restart": "never"})
    assert never["_status"] == "changed" and never["actions"] == ["define"]
    assert never["restart_pending"] and not never["restarted"]
    assert dom_id(libvirt_conn, guest_name) == second_id
    again = run({**args, "memory": "96MiB", "restart": "never"})
    assert again["_status"] == "ok" and again["restart_pending"]

    # A later on_change run carries out the pending restart, once.
    apply_pending = run({"name": guest_name, "shutdown_timeout": 2})
    assert apply_pending["actions"] == ["restart"]
    assert not apply_pending["restart_pending"]
    assert dom_id(libvirt_conn, guest_name) != second_id


def test_stop_gracefully_then_absent_while_running(libvirt_conn, guest_name, busybox_rootfs):
    root = busybox_rootfs(TERM_INIT)
    make_guest(libvirt_conn, guest_name, root)
    args = {"name": guest_name, "state": "stopped", "shutdown_timeout": 2}
    runs = check_real_check_real(libvirt_conn, guest_name, args)
    assert runs[0]["actions"] == ["stop"]
    assert runs[1]["state"] == "stopped" and not runs[1]["forced_stop"]
    assert not libvirt_conn.lookupByName(guest_name).isActive()

    libvirt_conn.lookupByName(guest_name).create()
    runs = check_real_check_real(libvirt_conn, guest_name, {**args, "state": "absent"})
    assert runs[0]["actions"] == ["stop", "undefine"]
    assert runs[1]["state"] == "absent"
    assert stored(libvirt_conn, guest_name) is None


def test_hand_defined_guest_is_adopted_without_changes(libvirt_conn, guest_name, busybox_rootfs, tmp_path, bridge):
    root = busybox_rootfs()
    hand = guestlib.domain_xml(
        guest_name, root, extra_devices=f"<interface type='bridge'><source bridge='{bridge}'/></interface>"
    ).replace("<os>", f"<metadata><o:tool xmlns:o='{OTHER_NS}'><o:x a='1'>keep me</o:x></o:tool></metadata><os>")
    (tmp_path / "hand.xml").write_text(hand)
    subprocess.run(
        ["virsh", "-c", "lxc:///system", "define", str(tmp_path / "hand.xml")], check=True, capture_output=True
    )
    before = stored(libvirt_conn, guest_name)
    args = {
        "name": guest_name,
        "state": "stopped",
        "rootfs": str(root),
        "init": "/init",
        "memory": 64,
        "interfaces": [{"bridge": bridge}],
    }
    for result in (run(args, check=True), run(args), run({"name": guest_name, "state": "stopped", "xml": hand})):
        assert result["_status"] == "ok", (result.get("msg"), result.get("changes"))
    assert stored(libvirt_conn, guest_name) == before

    changed = run({**args, "memory": "80MiB"})
    assert changed["actions"] == ["define"] and changed["changes"] == ["memory", "currentMemory"]
    after = stored(libvirt_conn, guest_name)
    assert after.replace("81920", "65536") == before  # uuid, MAC, foreign metadata: byte-identical


def test_bad_inputs_touch_nothing(libvirt_conn, guest_name, busybox_rootfs, tmp_path):
    """All bad inputs in one playbook run (each task may fail); nothing may change."""
    root = busybox_rootfs(TERM_INIT)
    make_guest(libvirt_conn, guest_name, root, interfaces=[])
    prefix = guest_name.split("-")[0] + "-"

    def snapshot():
        listing = subprocess.run(
            ["virsh", "-c", "lxc:///system", "list", "--all"], check=True, capture_output=True, text=True
        ).stdout
        # the column width follows the longest name (other people's guests too)
        mine = [" ".join(line.split()) for line in listing.splitlines() if prefix in line]
        return mine, stored(libvirt_conn, guest_name)

    before = snapshot()
    g = {"name": guest_name}
    bad = [
        ({**g, "capabilities": {"add": ["sys_fly"]}}, "unknown capability 'sys_fly'"),
        ({"name": f"{prefix}bad/name", "rootfs": str(root)}, "is invalid"),
        ({**g, "rootfs": str(tmp_path / "missing")}, "does not exist"),
        ({**g, "filesystems": [{"source": str(tmp_path), "target": "relative"}]}, "must be an absolute path"),
        ({**g, "state": "vanished"}, "vanished"),
        ({**g, "xml": "<domain type='lxc'><name>"}, "is not well-formed XML"),
        ({**g, "interfaces": [{"bridge": "x", "mac": "52:54:00:12:34"}]}, "is not a MAC address"),
        ({**g, "memory": "64MB"}, "unknown unit 'MB'"),
        ({**g, "memory": "1GiB", "xml": "<domain type='lxc'/>"}, "cannot be combined"),
    ]
    tasks = [{"name": f"bad {i}", MODULE: args, "ignore_errors": True} for i, (args, _msg) in enumerate(bad)]
    playbook = tmp_path / "bad.yml"
    playbook.write_text(json.dumps([{"hosts": "all", "gather_facts": False, "tasks": tasks}]))
    _proc, records = play.run_playbook(playbook)
    assert len(records) == len(bad)
    for record, (_args, message) in zip(records, bad, strict=True):
        assert record["status"] == "failed", record
        assert message in record["result"]["msg"], record["result"]["msg"]
    assert snapshot() == before


def test_info_reports_guests_with_leased_ips(libvirt_conn, guest_name, busybox_rootfs, tmp_path, bridge):
    root = busybox_rootfs()
    mac = "52:54:00:5a:17:01"
    make_guest(
        libvirt_conn,
        guest_name,
        root,
        state="present",
        interfaces=[{"bridge": bridge, "mac": mac}],
        filesystems=[{"type": "ram", "target": "/run", "size": "4MiB"}],
    )
    (tmp_path / f"{bridge}.leases").write_text(
        f"0 {mac.upper()} 10.77.0.9 player *\n{int(time.time()) + 600} 52:54:00:00:00:99 10.77.0.10 x *\n"
    )
    missing = f"{guest_name}-nope"
    result = play.run_module("kiosk.lxc.lxc_domain_info", {"names": [guest_name, missing], "leases_dir": str(tmp_path)})
    assert result["_status"] == "ok", result.get("msg")
    assert result["missing"] == [missing]
    (info,) = result["guests"]
    assert info["state"] == "stopped" and info["memory"] == "64MiB"
    assert info["uuid"] == libvirt_conn.lookupByName(guest_name).UUIDString()
    assert info["rootfs"] == str(root)
    assert info["interfaces"] == [{"type": "bridge", "source": bridge, "mac": mac, "ips": ["10.77.0.9"]}]
    assert [(m["type"], m["target"]) for m in info["mounts"]] == [("mount", "/"), ("ram", "/run")]
