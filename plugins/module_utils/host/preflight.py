# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a kiosk host offers libvirt LXC guests, and what would stop them.

Like lxc-checkconfig, but read from the running kernel (/proc, mountinfo)
rather than a kernel config file, and in terms of what kiosk.lxc needs:
namespaces, the cgroup layout and its device controller, the device majors
sound and graphics use, the libvirt LXC driver.

What ARM boards get wrong is read the same way: the memory cgroup controller
(/proc/cgroups; Raspberry Pi OS kernels leave it off unless the command line
says cgroup_enable=memory), BPF device control for cgroup v2 (the kernel's
config, from /boot/config-<release> or /proc/config.gz, else its symbols), the
snd-usb-audio module (/lib/modules/<release>), and a 32-bit userland on a
64-bit kernel (the ELF class of the interpreter running this code).
"""

from __future__ import annotations

import gzip
import os
import re

from ansible_collections.kiosk.lxc.plugins.module_utils.common import dpkg, procfs

RUN_DIR = "/run"

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


def read_controllers(proc: str = "/proc") -> dict[str, bool]:
    """Cgroup controller name -> enabled, from /proc/cgroups ({} when it is not there)."""
    out: dict[str, bool] = {}
    try:
        with open(os.path.join(proc, "cgroups"), encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) == 4 and not line.startswith("#") and fields[3] in ("0", "1"):
            out[fields[0]] = fields[3] == "1"
    return out


def read_cmdline(proc: str = "/proc") -> list[str]:
    try:
        with open(os.path.join(proc, "cmdline"), encoding="utf-8", errors="replace") as fh:
            return fh.read().split()
    except OSError:
        return []


def read_kernel_config(release: str, proc: str = "/proc", boot: str = "/boot") -> dict[str, str] | None:
    """CONFIG_* -> y/m/... of the running kernel (/boot/config-<release>, else /proc/config.gz); None if neither."""
    text = None
    try:
        with open(os.path.join(boot, f"config-{release}"), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        try:
            with gzip.open(os.path.join(proc, "config.gz"), "rt", encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            return None
    return dict(m.groups() for m in re.finditer(r"^(CONFIG_[A-Za-z0-9_]+)=(\S+)$", text, re.M))


# The device check of cgroup v2 (kernel/bpf/cgroup.c); in /proc/kallsyms of every kernel built with CGROUP_BPF.
BPF_DEVICE_SYMBOL = "__cgroup_bpf_check_dev_permission"


def read_bpf_device_control(config: dict[str, str] | None, proc: str = "/proc") -> bool | None:
    """Whether cgroup v2 device programs can be attached: CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF; None if unknown."""
    if config is not None:
        return config.get("CONFIG_BPF_SYSCALL") == "y" and config.get("CONFIG_CGROUP_BPF") == "y"
    try:
        with open(os.path.join(proc, "kallsyms"), encoding="utf-8", errors="replace") as fh:
            return any(line.split()[2:3] == [BPF_DEVICE_SYMBOL] for line in fh)
    except OSError:
        return None


def read_module(name: str, modules_dir: str) -> bool | None:
    """Whether the kernel whose modules are in modules_dir has module `name` (built in or loadable); None if unknown."""
    wanted = {name.replace("_", "-"), name.replace("-", "_")}
    found_any = False
    for index in ("modules.builtin", "modules.dep"):
        try:
            with open(os.path.join(modules_dir, index), encoding="utf-8", errors="replace") as fh:
                found_any = True
                for line in fh:
                    base = os.path.basename(line.split(":", 1)[0].strip()).split(".ko", 1)[0]
                    if base in wanted:
                        return True
        except OSError:
            continue
    return False if found_any else None


ELF_MACHINES = {3: "i386", 40: "arm", 62: "x86_64", 183: "aarch64"}


def read_elf(path: str) -> dict | None:
    """{"bits": 32|64, "machine": ...} of an ELF file (the program running this code: its userland)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF" or head[4] not in (1, 2):
        return None
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return {"bits": 32 if head[4] == 1 else 64, "machine": ELF_MACHINES.get(machine, str(machine))}


def systemd_running(run_dir: str = RUN_DIR) -> bool:
    """Whether systemd is PID 1 (sd_booted(): run_dir/systemd/system exists); every module asks here."""
    return os.path.isdir(os.path.join(run_dir, "systemd", "system"))


def gather(
    proc: str = "/proc",
    run_dir: str = RUN_DIR,
    *,
    boot: str = "/boot",
    modules: str = "/lib/modules",
    uname: tuple[str, str] | None = None,
    dpkg_status: str = dpkg.STATUS,
) -> dict:
    """What the host offers; ``uname`` is (machine, kernel release), the running kernel's by default."""
    machine, release = uname or (os.uname().machine, os.uname().release)
    ns_dir = os.path.join(proc, "self", "ns")
    namespaces = {ns: os.path.exists(os.path.join(ns_dir, ns)) for ns in REQUIRED_NAMESPACES}
    namespaces.update({ns: os.path.exists(os.path.join(ns_dir, ns)) for ns in OPTIONAL_NAMESPACES})
    userns_max = os.path.join(proc, "sys", "user", "max_user_namespaces")
    user_namespaces = namespaces["user"]
    if user_namespaces and os.path.exists(userns_max):
        with open(userns_max, encoding="utf-8") as fh:
            user_namespaces = int(fh.read().strip() or 0) > 0
    cgroup = read_cgroup(os.path.join(proc, "self", "mountinfo"))
    controllers = read_controllers(proc)
    cgroup["memory"] = controllers.get("memory")
    cgroup["memory_disabled_by"] = next(
        (
            a
            for a in read_cmdline(proc)
            if a.startswith("cgroup_disable=") and "memory" in a.split("=", 1)[1].split(",")
        ),
        None,
    )
    cgroup["bpf_device_control"] = read_bpf_device_control(read_kernel_config(release, proc, boot), proc)
    if cgroup["version"] == "v2" and cgroup["bpf_device_control"] is False:
        cgroup["device_control"], cgroup["device_control_kind"] = False, None
    return {
        "architecture": machine,
        "kernel": release,
        "namespaces": namespaces,
        "user_namespaces": user_namespaces,
        "cgroup": cgroup,
        "snd_usb_audio": read_module("snd-usb-audio", os.path.join(modules, release)),
        "userland": read_elf(os.path.join(proc, "self", "exe")),
        "majors": read_majors(proc),
        "sound_cards": read_sound_cards(proc),
        "systemd": systemd_running(run_dir),
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
    cgroup = facts["cgroup"]
    if cgroup.get("memory") is False:
        if cgroup.get("memory_disabled_by"):
            fix = f"remove {cgroup['memory_disabled_by']} from the kernel command line and reboot"
        else:
            fix = (
                "add cgroup_enable=memory to the kernel command line and reboot (Raspberry Pi OS kernels leave it off: "
                "append it to the one line of /boot/firmware/cmdline.txt, /boot/cmdline.txt before bookworm)"
            )
        fatal.append(
            "The memory cgroup controller is disabled (/proc/cgroups), so libvirt cannot set guests' memory limits: "
            + fix
            + "."
        )
    if cgroup.get("version") == "v2" and cgroup.get("bpf_device_control") is False:
        fatal.append(
            "This kernel cannot attach cgroup v2 device programs (it lacks CONFIG_BPF_SYSCALL or CONFIG_CGROUP_BPF), "
            "so guests could open every host device or none: boot a kernel built with both (Debian's linux-image-arm64 "
            "and Raspberry Pi OS kernels have them)."
        )
    elif not cgroup["device_control"]:
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
    if facts.get("snd_usb_audio") is False:
        warn.append(
            f"This kernel has no snd-usb-audio module (/lib/modules/{facts.get('kernel', '<release>')}), so USB sound "
            "cards never appear for guests: install the distribution's kernel with its modules (Raspberry Pi OS: "
            "linux-image-rpi-v8 or -rpi-2712; Debian: linux-image-arm64) or build it with CONFIG_SND_USB_AUDIO=m."
        )
    userland = facts.get("userland") or {}
    if facts.get("architecture") in ("aarch64", "arm64") and userland.get("bits") == 32:
        warn.append(
            f"A 32-bit userland ({userland.get('machine')}) runs on this 64-bit kernel (aarch64), so kiosk.lxc, which "
            "takes a guest base's architecture from the kernel, builds arm64 bases the host's own 32-bit packages do "
            "not match: install the 64-bit (arm64) Raspberry Pi OS, or set kiosk_rootfs_arch explicitly "
            "(armhf, with arm_64bit=0 in config.txt for a 32-bit kernel too)."
        )
    if facts["majors"]["alsa"] is None:
        warn.append(
            "No ALSA driver is loaded (no 'alsa' major in /proc/devices): "
            "guests get no sound until a sound card appears."
        )
    return fatal, warn
