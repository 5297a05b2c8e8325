# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start libvirtd's LXC driver on a host that has no service manager to do it.

On a host with the hybrid cgroup layout (v1 controllers plus cgroup2 mounted
beside them, e.g. at /sys/fs/cgroup/unified) libvirt 9.0's LXC driver fails
every guest start with "Unable to create directory /sys/fs/cgroup/unified".
libvirtd is then started in a private mount namespace with that one mount
removed, which changes nothing outside the namespace. On pure v1 or pure v2
hosts libvirtd is started as it is.

Used by the kiosk.lxc.libvirtd module and by the test harness.
"""

from __future__ import annotations

import os
import shutil
import time

from ansible_collections.kiosk.lxc.plugins.module_utils.common import procfs
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.host import preflight

DEFAULT_URI = "lxc:///system"
RUNTIME_DIRS = ("/var/log/libvirt", "/run/libvirt", "/var/lib/libvirt")
VIRTLOGD_SOCKET = "/run/libvirt/virtlogd-sock"


def hybrid_unified_mount(mountinfo: str = procfs.MOUNTINFO) -> str | None:
    """The cgroup2 mount point beside cgroup v1 controllers, or None."""
    v1 = False
    unified = None
    for mount in procfs.mountinfo(mountinfo):
        if mount.fstype == "cgroup":
            v1 = True
        elif mount.fstype == "cgroup2" and mount.mountpoint != "/sys/fs/cgroup":
            unified = mount.mountpoint
    return unified if v1 else None


def libvirtd_argv(daemonize: bool, mountinfo: str = procfs.MOUNTINFO) -> list[str]:
    """The command that starts libvirtd correctly on this host."""
    for tool in ("libvirtd", "virtlogd", "unshare"):
        if not shutil.which(tool):
            raise KioskError(f"libvirtd cannot be started: {tool} is not installed")
    daemon = "libvirtd -d" if daemonize else "libvirtd"
    unified = hybrid_unified_mount(mountinfo)
    if unified:
        return [
            "unshare", "-m", "--propagation", "private", "sh", "-c",
            f"umount {unified} && exec {daemon}",
        ]  # fmt: skip
    return daemon.split()


def virtlogd_argv(daemonize: bool) -> list[str] | None:
    """virtlogd's command, or None when one already listens."""
    if os.path.exists(VIRTLOGD_SOCKET):
        return None
    return ["virtlogd", "-d"] if daemonize else ["virtlogd"]


def prepare_runtime_dirs() -> None:
    for d in RUNTIME_DIRS:
        os.makedirs(d, exist_ok=True)


def wait_until(probe, timeout: float, alive=lambda: True, interval: float = 0.2):
    """Call probe() until it returns something not None, alive() turns False, or time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        if not alive():
            return None
        time.sleep(interval)
    return None


def ensure_started(uri: str, timeout: float, check_mode: bool, connect, run) -> dict:
    """Make libvirtd answer on uri; returns {changed, actions, how}.

    connect(uri) -> truthy when libvirtd answers; run(argv) runs a command and
    raises KioskError on failure. On a host where systemd runs, libvirtd is
    systemd's to start: `systemctl start libvirtd`. Elsewhere libvirtd and
    virtlogd are started as daemons, in a private mount namespace on a hybrid
    cgroup host (see the module docstring).
    """
    if connect(uri):
        return {"changed": False, "actions": [], "how": "already running"}
    if preflight.systemd_running():
        plan = [["systemctl", "start", "libvirtd.service"]]
        how = "systemd"
    else:
        plan = [argv for argv in (virtlogd_argv(True), libvirtd_argv(True)) if argv]
        how = "private mount namespace" if hybrid_unified_mount() else "daemon"
    actions = [" ".join(argv) for argv in plan]
    if check_mode:
        return {"changed": True, "actions": actions, "how": how}
    prepare_runtime_dirs()
    for argv in plan:
        run(argv)
    if wait_until(lambda: True if connect(uri) else None, timeout) is None:
        raise KioskError(
            f"libvirtd was started but does not answer on {uri} within {timeout:.0f} s; "
            "see /var/log/libvirt/libvirtd.log"
        )
    return {"changed": True, "actions": actions, "how": how}
