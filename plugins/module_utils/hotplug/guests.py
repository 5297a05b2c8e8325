# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The running guests the agent serves, and the processes inside them.

Guests and their selectors come from libvirt: the agent is its own daemon
(never a udev worker, never a libvirt hook), so asking libvirtd is safe.
The selectors are sound_passthrough's metadata (SOUND_NS) in the
persistent definition, read with sound.plan.read_metadata. Everything
inside a guest is reached through /proc of the guest's processes, never
through libvirtd (virsh lxc-enter-namespace would go through it).
"""

from __future__ import annotations

import os

from ansible_collections.kiosk.lxc.plugins.module_utils.common.virt import libvirt
from ansible_collections.kiosk.lxc.plugins.module_utils.domain.xmldef import etree
from ansible_collections.kiosk.lxc.plugins.module_utils.sound.plan import read_metadata

SOUND_SERVERS = ("pulseaudio", "pipewire")


def running_guests(conn) -> list[dict]:
    """[{"name", "pid", "selectors"}] of the running LXC guests with sound_passthrough metadata."""
    found = []
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        try:
            root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
            pid = dom.ID()
        except libvirt.libvirtError:
            continue  # stopped or undefined meanwhile
        if root.get("type") != "lxc":
            continue
        meta = read_metadata(root)
        if meta is None or pid is None or pid < 0:
            continue
        found.append({"name": dom.name(), "pid": pid, "selectors": meta["selectors"]})
    return found


def _children(pid: int, proc: str = "/proc") -> list[int]:
    kids = []
    for task in os.listdir(os.path.join(proc, str(pid), "task")):
        try:
            with open(os.path.join(proc, str(pid), "task", task, "children"), encoding="ascii") as fh:
                kids += [int(p) for p in fh.read().split()]
        except OSError:
            continue
    return kids


def ns_link(pid: int, kind: str, proc: str = "/proc") -> str | None:
    try:
        return os.readlink(os.path.join(proc, str(pid), "ns", kind))
    except OSError:
        return None


def init_pid(controller_pid: int, proc: str = "/proc") -> int | None:
    """The guest's init (pid 1 inside): the controller's child in a pid namespace of its own."""
    mine = ns_link(controller_pid, "pid", proc)
    for child in _children(controller_pid, proc):
        theirs = ns_link(child, "pid", proc)
        if theirs is not None and theirs != mine:
            return child
    return None


def _comm(pid: int, proc: str = "/proc") -> str:
    try:
        with open(os.path.join(proc, str(pid), "comm"), encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def sound_servers(guest_init: int, proc: str = "/proc") -> list[dict]:
    """The PulseAudio/PipeWire processes in the guest: [{"kind", "pid", "uid", "gid", "env"}]."""
    want = ns_link(guest_init, "pid", proc)
    found = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        pid = int(entry)
        comm = _comm(pid, proc)
        if comm not in SOUND_SERVERS or ns_link(pid, "pid", proc) != want:
            continue
        try:
            st = os.stat(os.path.join(proc, entry))
            with open(os.path.join(proc, entry, "environ"), "rb") as fh:
                raw = fh.read().split(b"\0")
        except OSError:
            continue
        env = {}
        for item in raw:
            key, sep, value = item.decode("utf-8", "replace").partition("=")
            if sep and key in ("XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS", "PULSE_RUNTIME_PATH", "HOME"):
                env[key] = value
        found.append({"kind": comm, "pid": pid, "uid": st.st_uid, "gid": st.st_gid, "env": env})
    return sorted(found, key=lambda s: s["pid"])
