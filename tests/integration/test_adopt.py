"""Adopting an lxc-start container: lxc_domain from_native and playbooks/adopt.yml.

Against the real libvirtd: its own lxc-tools conversion, then a guest that
starts. The config is the kind lxc-create writes (seed 004's layout): a dir:
rootfs, a veth on a bridge, mount entries (a directory, a character device,
/proc), device cgroup rules and keys libvirt has no use for.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import guest as guestlib
import libvirt
import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import persist
from play import REPO, run_module, run_playbook
from scratch_bridge import scratch_bridge


@pytest.fixture
def bridge():
    """A bridge of this test's own (no address, no traffic)."""
    with scratch_bridge("ktad") as name:
        yield name


@pytest.fixture
def host_char_node():
    """A /dev node with the ALSA major and no driver behind it (ENXIO once allowed)."""
    path = Path(f"/dev/kt-adopt-{secrets.token_hex(3)}")
    guestlib.mknod_char(path, 116, 91)
    yield path
    path.unlink(missing_ok=True)


def write_lxc_container(lxc_path: Path, name: str, rootfs: Path, *, bridge: str, shared: Path, node: Path) -> Path:
    """/<lxc_path>/<name>/config as lxc-create + hand edits leave it."""
    config = lxc_path / name / "config"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        f"""# Template used to create this container: /usr/share/lxc/templates/lxc-download
lxc.include = /usr/share/lxc/config/common.conf
lxc.arch = linux64
lxc.rootfs.path = dir:{rootfs}
lxc.uts.name = {name}
lxc.init.cmd = /init

lxc.net.0.type = veth
lxc.net.0.link = {bridge}
lxc.net.0.flags = up
lxc.net.0.hwaddr = 00:16:3e:4b:1d:07
lxc.net.0.name = eth0

lxc.mount.entry = {shared} srv/shared none bind,create=dir 0 0
lxc.mount.entry = {node} {str(node).lstrip("/")} none bind,create=file 0 0
lxc.mount.entry = proc proc proc nodev,noexec,nosuid 0 0
lxc.cgroup.devices.deny = a
lxc.cgroup.devices.allow = c 116:* rwm
lxc.cgroup.devices.allow = c 4:* rwm
lxc.apparmor.profile = unconfined
lxc.start.auto = 1
""",
        encoding="utf-8",
    )
    return config


@pytest.fixture
def container(tmp_path, busybox_rootfs, guest_name, bridge, host_char_node):
    """(config, rootfs, bridge) of an lxc-start container named guest_name under tmp_path/lxc."""
    node = host_char_node
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "from-host").write_text("hello\n")
    rootfs = busybox_rootfs(
        "ls /srv/shared > /out/shared\n"
        "ip -o link show eth0 > /out/eth0 2>&1\n"
        "cat /proc/self/cgroup > /out/cgroup\n" + guestlib.probe_loop([str(node)])
    )
    config = write_lxc_container(tmp_path / "lxc", guest_name, rootfs, bridge=bridge, shared=shared, node=node)
    return config, rootfs, bridge


def test_adopted_container_starts_with_its_mounts_network_and_device_rules(libvirt_conn, guest_name, container):
    config, rootfs, bridge = container
    args = {"name": guest_name, "from_native": str(config), "state": "running", "shutdown_timeout": 5}

    check = run_module("kiosk.lxc.lxc_domain", args, check=True)
    assert check["_status"] == "changed", check["_stdout"]
    assert check["actions"] == ["define", "start"]
    assert guest_name not in [d.name() for d in libvirt_conn.listAllDomains()]

    first = run_module("kiosk.lxc.lxc_domain", args)
    assert first["_status"] == "changed", first["_stdout"]
    assert first["state"] == "running"
    dom = libvirt_conn.lookupByName(guest_name)

    # The guest booted from the rootfs where lxc-create left it, with its init.
    assert guestlib.wait_for_file(rootfs / "out" / "started") == "1"
    assert guestlib.wait_for_file(rootfs / "out" / "shared") == "from-host"
    assert "eth0" in guestlib.wait_for_file(rootfs / "out" / "eth0")
    stored = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert f"<source bridge='{bridge}'/>" in stored
    assert "00:16:3e:4b:1d:07" in stored
    assert f"<source dir='{rootfs}'/>" in stored  # dir: prefix gone, rootfs in place

    # The char-device bind became a hostdev: the device cgroup lets the guest reach the node.
    assert guestlib.ERRNO_TEXT["ENXIO"] in guestlib.probe_result(rootfs, 0, "ENXIO")

    # devices.allow lines are cgroup_device's persistent rules now.
    specs, problems = persist.specs_from_domain_xml(stored)
    assert [str(s) for s in specs] == ["c 116:* rwm", "c 4:* rwm"]
    assert not problems

    report = first["native"]
    carried = {e["text"].split(" = ")[0] + ":" + e["as"] for e in report["carried_over"]}
    assert carried == {
        "lxc.init.cmd:init",
        "lxc.mount.entry:hostdev",
        "lxc.cgroup.devices.allow:cgroup_device rule",
    }
    dropped = {e["text"].split(" = ")[0]: e for e in report["not_converted"]}
    assert set(dropped) == {
        "lxc.include",
        "lxc.mount.entry",
        "lxc.cgroup.devices.deny",
        "lxc.apparmor.profile",
        "lxc.start.auto",
    }
    assert dropped["lxc.mount.entry"]["text"].endswith("proc proc proc nodev,noexec,nosuid 0 0")
    assert dropped["lxc.start.auto"]["line"] == 21

    # Adopting again changes nothing, in check mode and for real.
    again_check = run_module("kiosk.lxc.lxc_domain", args, check=True)
    assert again_check["_status"] == "ok", again_check["changes"]
    again = run_module("kiosk.lxc.lxc_domain", args)
    assert again["_status"] == "ok", again["changes"]
    assert again["uuid"] == first["uuid"]


def test_unreadable_or_unsupported_configs_fail_before_anything_is_defined(libvirt_conn, guest_name, tmp_path):
    missing = run_module("kiosk.lxc.lxc_domain", {"name": guest_name, "from_native": str(tmp_path / "nope")})
    assert missing["_status"] == "failed"
    assert missing["msg"].startswith(f"Guest '{guest_name}': from_native {tmp_path / 'nope'} cannot be read")

    overlay = tmp_path / "config"
    overlay.write_text("lxc.uts.name = x\nlxc.rootfs.path = overlay:/a:/b\n")
    result = run_module("kiosk.lxc.lxc_domain", {"name": guest_name, "from_native": str(overlay)})
    assert result["_status"] == "failed"
    assert "uses the 'overlay' storage backend" in result["msg"]

    both = run_module("kiosk.lxc.lxc_domain", {"name": guest_name, "from_native": str(overlay), "xml": "<domain/>"})
    assert both["_status"] == "failed"
    assert "mutually exclusive" in both["msg"]
    assert guest_name not in [d.name() for d in libvirt_conn.listAllDomains()]


def test_adopt_playbook_defines_every_container_and_reports_dropped_lines(libvirt_conn, guest_name, container):
    config, _rootfs, _bridge = container
    (config.parent.parent / "not-a-container").mkdir()  # no config: not adopted
    extra = {"kiosk_adopt_hosts": "all", "kiosk_adopt_lxc_path": str(config.parent.parent)}
    proc, records = run_playbook(REPO / "playbooks" / "adopt.yml", extra_vars=extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dom = libvirt_conn.lookupByName(guest_name)
    assert not dom.isActive()  # kiosk_adopt_state defaults to present: defined, not started
    report = next(r for r in records if r["task"].startswith("Report what"))
    msg = report["result"]["results"][0]["msg"]
    assert msg.startswith(f"{guest_name}: ")
    assert "lxc.apparmor.profile = unconfined -> libvirt applies its own security driver" in msg

    proc, records = run_playbook(REPO / "playbooks" / "adopt.yml", extra_vars=extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    defined = [r for r in records if r.get("task", "").startswith("Define each")]
    assert defined and all(r["status"] == "ok" for r in defined), defined
    assert os.path.exists(config)  # the lxc-start config is left as it was
