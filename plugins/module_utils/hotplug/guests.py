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
import re

from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import cgroupfs
from ansible_collections.kiosk.lxc.plugins.module_utils.common import guestfs
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.common.virt import libvirt
from ansible_collections.kiosk.lxc.plugins.module_utils.domain.xmldef import etree
from ansible_collections.kiosk.lxc.plugins.module_utils.sound.plan import read_metadata

SOUND_SERVERS = ("pulseaudio", "pipewire")
MAX_CANDIDATES = 8  # processes of a sound server's name looked at, per guest and action
MAX_SERVERS = 2  # of those, told about a card
ENV_KEPT = ("XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS", "PULSE_RUNTIME_PATH", "HOME")
_CONTROL_RE = re.compile("[\x00-\x1f\x7f]")


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
        found.append({"name": dom.name(), "pid": pid, "selectors": meta["selectors"], "udev_dir": udev_dir(root, meta)})
    return found


def udev_dir(root, meta: dict) -> str | None:
    """The host directory sound_passthrough binds as the guest's /run/udev (its own udev data), or None."""
    if meta["profile"] != "udev_data" or "/run/udev" not in meta["filesystems"]:
        return None
    for fs in root.findall("devices/filesystem[@type='mount']"):
        target, source = fs.find("target"), fs.find("source")
        if target is not None and source is not None and target.get("dir") == "/run/udev":
            return source.get("dir")
    return None


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


def _cgroup_in(pid: int, proc: str) -> str | None:
    try:
        return cgroupfs.cgroup_of_pid(pid, proc)
    except KioskError:
        return None


def kiosk_uid(guest_init: int, user: str, proc: str = "/proc") -> int | None:
    """The host uid of the guest's `user` (its /etc/passwd, read with common.guestfs, through the guest's uid_map).

    None when the guest has no such user, or its passwd cannot be read
    safely (a link planted there is refused, never followed).
    """
    try:
        passwd = guestfs.read_file(os.path.join(proc, str(guest_init), "root"), "etc/passwd")
    except (OSError, KioskError):
        return None
    for line in (passwd or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == user and fields[2].isdigit():
            return map_id(int(fields[2]), os.path.join(proc, str(guest_init), "uid_map"), inward=False)
    return None


def map_id(value: int, map_path: str, inward: bool) -> int:
    """An id through a uid_map/gid_map (inward: host id -> guest id); unchanged without a map."""
    try:
        with open(map_path, encoding="ascii") as fh:
            lines = [line.split() for line in fh if line.strip()]
    except OSError:
        return value
    for inside, outside, count in ((int(a), int(b), int(c)) for a, b, c in lines):
        src, dst = (outside, inside) if inward else (inside, outside)
        if src <= value < src + count:
            return dst + value - src
    return value


def sound_servers(guest_init: int, uid: int | None, guest_cgroup: str | None, proc: str = "/proc") -> dict:
    """The guest's PulseAudio/PipeWire: {"servers": [{"kind", "pid", "uid", "gid", "env"}], "passed", "looked"}.

    Strict, since any process of the guest may call itself pulseaudio: a
    server counts only if it is in the guest's pid namespace and in its
    cgroup (at or below guest_cgroup, the cgroup the card is granted in),
    and is owned by `uid` (the kiosk user's host uid; None: nobody counts).
    At most MAX_CANDIDATES processes of a server's name are looked at and
    MAX_SERVERS of them kept, lowest pids first; "passed" says how many
    others of that name were not looked at.
    """
    want = ns_link(guest_init, "pid", proc)
    found, looked, passed = [], 0, 0
    for pid in sorted(int(e) for e in os.listdir(proc) if e.isdigit()):
        if _comm(pid, proc) not in SOUND_SERVERS or ns_link(pid, "pid", proc) != want:
            continue
        if looked >= MAX_CANDIDATES or len(found) >= MAX_SERVERS:
            passed += 1
            continue
        looked += 1
        try:
            st = os.stat(os.path.join(proc, str(pid)))
        except OSError:
            continue
        cgroup = _cgroup_in(pid, proc)
        inside = cgroup is not None and guest_cgroup is not None
        inside = inside and (cgroup == guest_cgroup or cgroup.startswith(guest_cgroup.rstrip("/") + "/"))
        if uid is None or st.st_uid != uid or not inside:
            continue
        try:
            with open(os.path.join(proc, str(pid), "environ"), "rb") as fh:
                raw = fh.read(65536).split(b"\0")
        except OSError:
            continue
        env = {}
        for item in raw:
            key, sep, value = item.decode("utf-8", "replace").partition("=")
            if sep and key in ENV_KEPT and not _CONTROL_RE.search(value):
                env[key] = value
        found.append({"kind": _comm(pid, proc), "pid": pid, "uid": st.st_uid, "gid": st.st_gid, "env": env})
    return {"servers": found, "looked": looked, "passed": passed}
