"""Faults a kiosk survives, the ones that can run on this shared machine.

- dnsmasq killed (SIGKILL): lxc_bridge's next run starts it again and a guest
  gets a lease (the lxc_bridge lab: its own network namespaces).
- A guest's rootfs directory removed under the defined guest: the guest
  role's next run fails with one line naming the guest and the directory,
  instead of silently cloning a fresh rootfs over the guest's lost state;
  the other guest keeps its definition and keeps running.
- Two lxc_domain runs at once on one guest (two ansible-playbook processes):
  both succeed, one definition, no second guest.

libvirtd killed mid-run is test_fault_libvirtd.py: it kills a second, private
libvirtd of its own, never the one this machine's test sessions share.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import guest as guestlib
import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.subid import ranges
from lxc_bridge_lab import Lab
from play import run_module, run_playbook

BRIDGE = "kiosk.lxc.lxc_bridge"


@pytest.fixture
def lab():
    if not shutil.which("dnsmasq"):
        pytest.skip("dnsmasq is missing")
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"dnsmasq")
    except OSError:
        return False


def test_dnsmasq_killed_is_restarted_by_the_next_run(lab, tmp_path):
    args = {
        "name": f"kbr{lab.tag}",
        "config_dir": str(tmp_path / "etc"),
        "state_dir": str(tmp_path / "var"),
        "nat": False,
        "persistent": False,
    }
    (first,) = lab.run_tasks([args])
    assert first["_status"] == "changed", first.get("msg")
    pid = first["dnsmasq"]["pid"]
    assert _alive(pid)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)

    (again,) = lab.run_tasks([args])
    assert again["_status"] == "changed", again.get("actions")
    new = again["dnsmasq"]["pid"]
    assert new != pid and _alive(new)
    lab.ns(lab.host, "ip", "link", "set", "cv0", "master", args["name"])
    offer = lab.dhcp()
    assert offer["router"] == "10.0.3.1" and offer["ip"].startswith("10.0.3.")
    (settled,) = lab.run_tasks([args])
    assert settled["_status"] == "ok", settled.get("actions")


def test_rootfs_removed_under_a_defined_guest_is_a_clear_error(libvirt_conn, guest_name):
    tag = guest_name.split("-")[0]
    work = Path(f"/var/tmp/kiosk-lpf-{guest_name}")
    bridge = f"{tag}lpf"[:15]
    lost, kept = f"{guest_name}-a", f"{guest_name}-b"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        base = guestlib.make_rootfs(work / "base")
        (base / ".kiosk-rootfs.json").write_text(json.dumps({"key": "busybox", "arch": "amd64", "networkd": False}))
        pb = guestlib.role_play(work, bridge, [{"name": lost}, {"name": kept}])
        proc, _records = run_playbook(pb)
        assert proc.returncode == 0, proc.stdout[-3000:]
        kept_dom = libvirt_conn.lookupByName(kept)
        kept_xml, kept_id = kept_dom.XMLDesc(0), kept_dom.ID()

        shutil.rmtree(work / "guests" / lost)
        proc, records = run_playbook(pb)
        assert proc.returncode != 0
        failed = [r for r in records if r["status"] == "failed"]
        assert len(failed) == 1, failed
        msg = failed[0]["result"]["msg"]
        assert "\n" not in msg.strip() and f"Guest '{lost}'" in msg and str(work / "guests" / lost) in msg, msg
        # Nothing was re-cloned behind the guest's back; it is still defined; the other guest is as it was.
        assert not (work / "guests" / lost).exists()
        assert libvirt_conn.lookupByName(lost) is not None
        kept_dom = libvirt_conn.lookupByName(kept)
        assert kept_dom.isActive() and kept_dom.ID() == kept_id and kept_dom.XMLDesc(0) == kept_xml
    finally:
        subuid = ranges.read("/etc/subuid")["/etc/subuid"]
        starts = {e[1] for e in subuid if isinstance(e, tuple) and e[0] in (lost, kept)}
        for name in (lost, kept):
            ranges.ensure({"name": name, "state": "absent"})
        for dom in libvirt_conn.listAllDomains():
            if dom.name() in (lost, kept) and dom.isActive():
                dom.destroy()
        guestlib.release_systemd_cgroups((lost, kept), starts)
        subprocess.run(["ip", "link", "del", bridge], check=False)
        shutil.rmtree(work, ignore_errors=True)


def test_two_concurrent_lxc_domain_runs_leave_one_good_definition(libvirt_conn, guest_name, busybox_rootfs):
    root = busybox_rootfs()
    args = {"name": guest_name, "rootfs": str(root), "init": "/init", "memory": 64, "state": "running"}
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda a: run_module("kiosk.lxc.lxc_domain", a), [args, dict(args, memory=64)]))
    assert [r["_status"] for r in results].count("failed") == 0, [r.get("msg") for r in results]
    assert [d.name() for d in libvirt_conn.listAllDomains()].count(guest_name) == 1
    dom = libvirt_conn.lookupByName(guest_name)
    assert dom.isActive() and dom.maxMemory() == 64 * 1024
    assert run_module("kiosk.lxc.lxc_domain", args)["_status"] == "ok"
