"""The foundation's smoke test: a real busybox guest through libvirt-python."""

from __future__ import annotations

from pathlib import Path

import guest as guestlib
import libvirt
import pytest


def test_busybox_guest_boots_runs_init_and_goes_away(libvirt_conn, guest_name, busybox_rootfs):
    root = busybox_rootfs('echo "hello from $(hostname)" > /out/hello')
    dom = libvirt_conn.defineXML(guestlib.domain_xml(guest_name, root))
    dom.create()
    state, _reason = dom.state()
    assert state == libvirt.VIR_DOMAIN_RUNNING

    # The guest's init really ran, as pid 1 of its own pid namespace.
    assert guestlib.wait_for_file(root / "out" / "started") == "1"
    assert guestlib.wait_for_file(root / "out" / "hello").startswith("hello from")

    dom.destroy()
    assert not dom.isActive()
    dom.undefine()
    assert guest_name not in [d.name() for d in libvirt_conn.listAllDomains()]


def test_device_cgroup_probe_tells_eperm_from_enxio(libvirt_conn, guest_name, busybox_rootfs):
    """The cheap device-access assertion later tests build on.

    An ALSA-major node with no driver behind it: the guest's device cgroup
    denies it (EPERM) until `c 116:N rwm` is allowed, then open() reaches the
    kernel and fails with ENXIO (docs/docsite/rst/guide_platform.rst, "Device
    access"). cgroup v1 only: on v2 the rule is libvirt's BPF program, checked
    in the kiosk VM scenarios.
    """
    root = busybox_rootfs(guestlib.probe_loop(["/probe/snd"]))
    guestlib.mknod_char(root / "probe" / "snd", 116, 77)
    dom = libvirt_conn.defineXML(guestlib.domain_xml(guest_name, root))
    dom.create()
    assert guestlib.probe_result(root, 0, "EPERM").endswith(guestlib.ERRNO_TEXT["EPERM"])

    cg = _v1_devices_dir(dom)
    if cg is None:
        pytest.skip("no cgroup v1 devices controller on this host")
    (cg / "devices.allow").write_text("c 116:77 rwm\n")
    assert guestlib.ERRNO_TEXT["ENXIO"] in guestlib.probe_result(root, 0, "ENXIO")
    (cg / "devices.deny").write_text("c 116:77 rwm\n")
    assert guestlib.ERRNO_TEXT["EPERM"] in guestlib.probe_result(root, 0, "EPERM")


def _v1_devices_dir(dom):
    base = Path("/sys/fs/cgroup/devices/machine")
    if not base.is_dir():
        return None
    matches = [p for p in base.iterdir() if p.name.endswith(f"-{dom.name()}.libvirt-lxc")]
    return matches[0] if matches else None
