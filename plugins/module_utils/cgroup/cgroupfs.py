# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a process's device rules live: a v1 devices directory or a v2 cgroup.

Decided from the mounts, not guessed: if a cgroup v1 hierarchy carries the
`devices` controller, the rules are there (also on hybrid hosts, where a
cgroup2 mount sits beside the v1 controllers); otherwise the cgroup2 mount
is the only one and the rules are libvirt's BPF map.
"""

from __future__ import annotations

import os

from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup.v1 import V1Devices
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup.v2 import V2Devices
from ansible_collections.kiosk.lxc.plugins.module_utils.common import procfs
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

MOUNTINFO = procfs.MOUNTINFO


def cgroup_mounts(mountinfo: str = MOUNTINFO) -> tuple[str | None, str | None]:
    """(v1 devices controller mount point, cgroup2 mount point); either may be None."""
    v1 = v2 = None
    for mount in procfs.mountinfo(mountinfo):
        if mount.fstype == "cgroup" and "devices" in mount.super_options:
            v1 = mount.mountpoint
        elif mount.fstype == "cgroup2" and v2 is None:
            v2 = mount.mountpoint
    return v1, v2


def backend_for_path(cgroup: str, mountinfo: str = MOUNTINFO):
    """The device rules of a cgroup given as a path inside the hierarchy (e.g. /machine/x)."""
    v1, v2 = cgroup_mounts(mountinfo)
    mount = v1 or v2
    if mount is None:
        raise KioskError("No cgroup v1 devices controller and no cgroup2 file system are mounted on this host")
    path = os.path.join(mount, cgroup.strip("/"))
    if not os.path.isdir(path):
        raise KioskError(f"cgroup {cgroup}: {path} does not exist")
    return V1Devices(path) if v1 else V2Devices(path, mount=v2)


def cgroup_of_pid(pid: int, proc: str = "/proc", mountinfo: str = MOUNTINFO) -> str:
    """The cgroup path of pid in the hierarchy that decides device access."""
    v1, _v2 = cgroup_mounts(mountinfo)
    try:
        with open(os.path.join(proc, str(pid), "cgroup"), encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise KioskError(f"Process {pid}: cannot read its cgroup: {exc.strerror}") from exc
    for line in lines:
        _num, controllers, path = line.split(":", 2)
        if (v1 and "devices" in controllers.split(",")) or (not v1 and controllers == ""):
            return path
    raise KioskError(f"Process {pid}: no {'devices' if v1 else 'cgroup2'} entry in {proc}/{pid}/cgroup")


def backend_for_pid(pid: int, proc: str = "/proc", mountinfo: str = MOUNTINFO):
    return backend_for_path(cgroup_of_pid(pid, proc, mountinfo), mountinfo)
