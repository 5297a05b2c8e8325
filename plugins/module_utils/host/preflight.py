# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a kiosk host offers libvirt LXC guests, and what would stop them.

Like lxc-checkconfig, but read from the running kernel (/proc, mountinfo)
rather than a kernel config file, and in terms of what kiosk.lxc needs:
namespaces, the cgroup layout and its device controller, the device majors
sound and graphics use, the libvirt LXC driver.
"""

from __future__ import annotations

import os

from ansible_collections.kiosk.lxc.plugins.module_utils.common import dpkg, procfs

REQUIRED_NAMESPACES = ("mnt", "uts", "ipc", "pid", "net")
OPTIONAL_NAMESPACES = ("user", "cgroup")
MAJOR_NAMES = ("alsa", "drm", "input")
LXC_EMULATOR = "/usr/lib/libvirt/libvirt_lxc"
LXC_DRIVER_PACKAGE = "libvirt-daemon-driver-lxc"  # the Debian package that ships LXC_EMULATOR


def read_majors(proc: str = "/proc") -> dict[str, int | None]:
    """Character-device majors by name from /proc/devices (None when absent)."""
    char = procfs.proc_devices(os.path.join(proc, "devices"))["char"]
    return {name: (char[name][0] if name in char else None) for name in MAJOR_NAMES}


def read_cgroup(mountinfo: str) -> dict:
    """The cgroup layout: version v1 | v2 | hybrid, and the device controller."""
    v1_controllers: set[str] = set()
    v2_mounts = []
    for mount in procfs.mountinfo(mountinfo):
        if mount.fstype == "cgroup":
            v1_controllers.update(mount.super_options)
        elif mount.fstype == "cgroup2":
            v2_mounts.append(mount.mountpoint)
    if v1_controllers and v2_mounts:
        version = "hybrid"
    elif v2_mounts:
        version = "v2"
    elif v1_controllers:
        version = "v1"
    else:
        version = "none"
    devices = "devices" in v1_controllers or (version == "v2")
    return {
        "version": version,
        "v1_controllers": sorted(c for c in v1_controllers if c not in ("rw", "ro")),
        "v2_mounts": v2_mounts,
        # v1: the devices controller; v2: BPF device programs, always there.
        "device_control": devices,
        "device_control_kind": "bpf" if version == "v2" else ("devices.allow" if devices else None),
    }


def read_sound_cards(proc: str = "/proc") -> list[str]:
    """The cards' "driver - name" descriptions from /proc/asound/cards ([] when it is forged)."""
    cards = procfs.asound_cards(os.path.join(proc, "asound", "cards"))
    return [f"{c['alsa_driver']} - {c['name']}" for _n, c in sorted(cards.items())]


def gather(proc: str = "/proc", run_dir: str = "/run", dpkg_status: str = dpkg.STATUS) -> dict:
    ns_dir = os.path.join(proc, "self", "ns")
    namespaces = {ns: os.path.exists(os.path.join(ns_dir, ns)) for ns in REQUIRED_NAMESPACES}
    namespaces.update({ns: os.path.exists(os.path.join(ns_dir, ns)) for ns in OPTIONAL_NAMESPACES})
    userns_max = os.path.join(proc, "sys", "user", "max_user_namespaces")
    user_namespaces = namespaces["user"]
    if user_namespaces and os.path.exists(userns_max):
        with open(userns_max, encoding="utf-8") as fh:
            user_namespaces = int(fh.read().strip() or 0) > 0
    return {
        "architecture": os.uname().machine,
        "kernel": os.uname().release,
        "namespaces": namespaces,
        "user_namespaces": user_namespaces,
        "cgroup": read_cgroup(os.path.join(proc, "self", "mountinfo")),
        "majors": read_majors(proc),
        "sound_cards": read_sound_cards(proc),
        "systemd": os.path.isdir(os.path.join(run_dir, "systemd", "system")),
        "libvirt_lxc_driver": os.path.exists(LXC_EMULATOR),
        "packages": sorted(dpkg.installed(dpkg_status)),
    }


def problems(facts: dict, require_libvirt: bool = True, installing=()) -> tuple[list[str], list[str]]:
    """(fatal problems, warnings), each one sentence a user can act on.

    ``installing``: the packages the caller installs next (the host role's missing ones); a missing LXC
    driver whose package is among them is not a problem (the libvirtd module fails if it is still missing).
    """
    fatal, warn = [], []
    missing = [ns for ns in REQUIRED_NAMESPACES if not facts["namespaces"].get(ns)]
    if missing:
        fatal.append("This kernel lacks the namespaces libvirt LXC guests need: " + ", ".join(missing) + ".")
    if not facts["cgroup"]["device_control"]:
        fatal.append(
            f"No cgroup device controller (cgroup layout {facts['cgroup']['version']}): "
            "guests could open every host device or none."
        )
    if require_libvirt and not facts["libvirt_lxc_driver"] and LXC_DRIVER_PACKAGE not in installing:
        fatal.append(
            f"libvirt's LXC driver is not installed ({LXC_EMULATOR} is missing): install libvirt-daemon-driver-lxc."
        )
    if not facts["user_namespaces"]:
        warn.append("User namespaces are disabled: unprivileged (idmap) guests cannot start.")
    if facts["majors"]["alsa"] is None:
        warn.append(
            "No ALSA driver is loaded (no 'alsa' major in /proc/devices): "
            "guests get no sound until a sound card appears."
        )
    return fatal, warn
