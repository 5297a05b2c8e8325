"""The Python API other modules build on (module_utils/domain/manage.py), against the real libvirtd.

No Ansible here: edit_definition() and stop() are called as sound_passthrough
and cgroup_device call them.
"""

from __future__ import annotations

import time

import guest as guestlib
import libvirt
from ansible_collections.kiosk.lxc.plugins.module_utils.common.namespaces import META_NS, SOUND_NS
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import manage
from lxml import etree

TERM_INIT = "trap 'exit 0' TERM\nwhile true; do sleep 0.1; done"


def stored(conn, name):
    return conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def test_edit_definition_adds_a_hostdev_and_keeps_the_rest(libvirt_conn, guest_name, busybox_rootfs, tmp_path):
    root = busybox_rootfs(TERM_INIT)
    node = guestlib.mknod_char(tmp_path / "snd" / "controlC9", 116, 9)
    manage.ensure(
        libvirt_conn,
        {"name": guest_name, "rootfs": str(root), "init": "/init", "memory": 64,
         "metadata": {"role": "player"}, "shutdown_timeout": 2},
    )  # fmt: skip
    # Another module's metadata, set the way libvirt's own API sets it.
    dom = libvirt_conn.lookupByName(guest_name)
    dom.setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT, "<card id='usb-1'/>", "kiosksnd", SOUND_NS,
        libvirt.VIR_DOMAIN_AFFECT_CONFIG,
    )  # fmt: skip
    first_id = dom.ID()
    before = stored(libvirt_conn, guest_name)

    def add_hostdev(root):
        devices = root.find("devices")
        if not any(el.findtext("source/char") == str(node) for el in devices.iter("hostdev")):
            hd = etree.SubElement(devices, "hostdev", mode="capabilities", type="misc")
            etree.SubElement(etree.SubElement(hd, "source"), "char").text = str(node)

    check = manage.edit_definition(libvirt_conn, guest_name, add_hostdev, check_mode=True, shutdown_timeout=2)
    assert check["changed"] and check["actions"] == ["define", "restart"]
    assert check["changes"] == ["devices/hostdev (added)"]
    assert stored(libvirt_conn, guest_name) == before
    assert libvirt_conn.lookupByName(guest_name).ID() == first_id

    real = manage.edit_definition(libvirt_conn, guest_name, add_hostdev, shutdown_timeout=2)
    assert real["actions"] == check["actions"] and real["restarted"]
    assert libvirt_conn.lookupByName(guest_name).ID() != first_id and dom.isActive()
    after = stored(libvirt_conn, guest_name)
    assert f"<char>{node}</char>" in after
    # Everything else is as it was: uuid, both metadata namespaces.
    assert (
        after.replace(
            f"    <hostdev mode='capabilities' type='misc'>\n      <source>\n        <char>{node}</char>\n"
            "      </source>\n    </hostdev>\n",
            "",
        )
        == before
    )
    assert SOUND_NS in after and META_NS in after

    again = manage.edit_definition(libvirt_conn, guest_name, add_hostdev, shutdown_timeout=2)
    assert not again["changed"] and again["actions"] == []

    pending = manage.edit_definition(
        libvirt_conn, guest_name, lambda r: r.find("vcpu").__setattr__("text", "2"), restart="never"
    )
    assert pending["actions"] == ["define"] and pending["restart_pending"]


def test_stop_destroys_an_init_that_ignores_shutdown(libvirt_conn, guest_name, busybox_rootfs):
    root = busybox_rootfs()  # plain busybox sh as init: no handler, SIGTERM is ignored
    manage.ensure(libvirt_conn, {"name": guest_name, "rootfs": str(root), "init": "/init", "memory": 64})
    dom = libvirt_conn.lookupByName(guest_name)
    started = time.monotonic()
    assert manage.stop(dom, 1.0) is True
    assert not dom.isActive()
    assert time.monotonic() - started < 5


def test_edit_definition_of_a_missing_guest_fails(libvirt_conn, guest_name):
    try:
        manage.edit_definition(libvirt_conn, guest_name, lambda r: None)
    except manage.KioskError as exc:
        assert exc.msg == f"Guest '{guest_name}' is not defined"
    else:
        raise AssertionError("no error")
