# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""lxc_domain's from_native: adopt an lxc-start container through libvirt's own conversion.

Plain Python, no ansible imports. The config of an lxc-start container
(/var/lib/lxc/NAME/config) is converted by libvirt itself
(virConnectDomainXMLFromNative "lxc-tools", what `virsh domxml-from-native`
runs). That conversion (libvirt 9.0, src/lxc/lxc_native.c) reads a fixed set
of keys and silently drops every other line; it also has gaps that leave a
guest that cannot start. This module fills the gaps and reports every line
that did not make it, so an adoption is never silently lossy:

- `lxc.rootfs.path = dir:/x`: libvirt keeps the `dir:` prefix as part of the
  path; it is removed (the rootfs stays where it is). Other storage backends
  (overlay:, btrfs:, lvm: ...) are refused.
- `lxc.init.cmd`: libvirt always writes /sbin/init; the command is carried
  over as <init>/<initarg>.
- `lxc.mount.entry` binds of a /dev/ path: libvirt turns any source under
  /dev/ into a block-device filesystem. A bind of a directory (the old
  `/dev/snd dev/snd none bind` audio recipe) becomes a bind mount again, a
  bind of a character device becomes a <hostdev type='misc'>, which also
  gets a device cgroup rule. Entries for the places libvirt mounts by itself
  (proc, sys, dev/pts ...) are reported.
- `lxc.cgroup.devices.allow` / `lxc.cgroup2.devices.allow`: carried over as
  persistent rules in the DEVICES_NS metadata that kiosk.lxc.cgroup_device
  keeps and its libvirt hook applies at every start.
- No `lxc.tty.max`: libvirt's conversion gives the guest no console, and
  libvirt then refuses to start it ("At least one PTY console is required");
  one pty console is added.
- No memory limit in the config: libvirt's conversion sets 64 MiB (lxc-start
  had none); lxc_domain's default for a new guest (512 MiB) is used instead.
- The generated UUID is dropped, so an adopted guest keeps the UUID it got
  the first time and a second run changes nothing.

`convert()` returns the definition tree and the report; `ensure()` is what
the module runs: convert, apply the other lxc_domain options on top, then
lxc_domain's own plan/apply with the result as its `xml`.
"""

from __future__ import annotations

import os
import re
import stat

from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import rules as cgrules
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.common.namespaces import DEVICES_NS, DEVICES_PREFIX
from ansible_collections.kiosk.lxc.plugins.module_utils.common.virt import libvirt
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import manage, xmldef
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import spec as speclib
from ansible_collections.kiosk.lxc.plugins.module_utils.domain.xmldef import etree

NATIVE_FORMAT = "lxc-tools"
# Keys libvirt 9.0's lxc-tools conversion reads (exact names, then prefixes).
LIBVIRT_KEYS = {
    "lxc.uts.name",
    "lxc.utsname",
    "lxc.arch",
    "lxc.tty.max",
    "lxc.tty",
    "lxc.idmap",
    "lxc.id_map",
    "lxc.cgroup.memory.limit_in_bytes",
    "lxc.cgroup.memory.soft_limit_in_bytes",
    "lxc.cgroup.memory.memsw.limit_in_bytes",
    "lxc.cgroup.cpu.shares",
    "lxc.cgroup.cpu.cfs_quota_us",
    "lxc.cgroup.cpu.cfs_period_us",
    "lxc.cgroup.cpuset.cpus",
    "lxc.cgroup.cpuset.mems",
    "lxc.cap.drop",
}
LIBVIRT_PREFIXES = ("lxc.cgroup.blkio.",)
NET_RE = re.compile(r"lxc\.(net\.\d+|network)\.(.+)")
NET_SUFFIXES = {
    "name",
    "type",
    "link",
    "hwaddr",
    "flags",
    "macvlan.mode",
    "vlan.id",
    "ipv4",
    "ipv4.gateway",
    "ipv4.address",
    "ipv6",
    "ipv6.gateway",
    "ipv6.address",
}
DEVICE_RULE_KEYS = ("lxc.cgroup.devices.allow", "lxc.cgroup2.devices.allow")
DEVICE_DENY_KEYS = ("lxc.cgroup.devices.deny", "lxc.cgroup2.devices.deny")
# libvirt mounts these itself and skips lxc.mount.entry lines for them (lxcIsBasicMountLocation).
BASIC_MOUNTS = ("/proc", "/proc/sys", "/sys", "/sys/fs/selinux", "/dev", "/dev/pts", "/dev/shm")
# Why a key libvirt ignores was not converted, by exact key or prefix; the rest get DEFAULT_REASON.
REASONS = (
    ("lxc.include", "included files are not read: put the lines you need into this config"),
    ("lxc.start.auto", "use lxc_domain's autostart option"),
    ("lxc.apparmor.", "libvirt applies its own security driver (none for LXC guests here)"),
    ("lxc.seccomp.", "libvirt's LXC driver has no seccomp profiles"),
    ("lxc.mount.auto", "libvirt mounts /proc, /sys and /dev by itself"),
    ("lxc.autodev", "libvirt always gives the guest its own /dev"),
    ("lxc.hook.", "lxc-start hooks do not run under libvirt: use a libvirt hook"),
    ("lxc.cap.keep", "libvirt's conversion only reads lxc.cap.drop: use the capabilities option"),
    ("lxc.environment", "set the environment in the guest's init instead"),
    ("lxc.console.", "libvirt gives the guest a pty console"),
)
DEFAULT_REASON = "libvirt's lxc-tools conversion ignores this key"
ROOTFS_PREFIX_RE = re.compile(r"([a-z]+):(.*)")
NEW_GUEST_MEMORY_KIB = speclib.NEW_GUEST_MEMORY_KIB
LIBVIRT_DEFAULT_MEMORY_KIB = 64 * 1024


# ------------------------------------------------------------------ the config file


def read_config(guest: str, path: str) -> str:
    """The config's text; KioskError naming the option when it cannot be read."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise KioskError(f"Guest '{guest}': from_native {path!r} must be an absolute path")
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise KioskError(f"Guest '{guest}': from_native {path} cannot be read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise KioskError(f"Guest '{guest}': from_native {path} is not a text file") from exc


def parse_lines(text: str) -> list[tuple[int, str, str]]:
    """(line number, key, value) of each `key = value` line; comments and blanks skipped."""
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        out.append((number, key.strip(), value.strip() if sep else ""))
    return out


def parse_mount_entry(value: str) -> dict | None:
    """An lxc.mount.entry value as {source, target (absolute), type, options}, or None."""
    parts = value.split()
    if len(parts) < 4:
        return None
    target = parts[1] if parts[1].startswith("/") else "/" + parts[1]
    return {
        "source": parts[0],
        "target": os.path.normpath(target),
        "type": parts[2],
        "options": parts[3].split(","),
    }


# ------------------------------------------------------------------ after libvirt's conversion


def _entry(number: int, key: str, value: str, **extra) -> dict:
    return {"line": number, "text": f"{key} = {value}", **extra}


def _reason(key: str) -> str:
    for prefix, reason in REASONS:
        if key == prefix or (prefix.endswith(".") and key.startswith(prefix)):
            return reason
    return DEFAULT_REASON


def _fix_rootfs(guest: str, devices, value: str) -> None:
    path = value
    match = ROOTFS_PREFIX_RE.fullmatch(value)
    if match:
        if match.group(1) != "dir":
            raise KioskError(
                f"Guest '{guest}': from_native rootfs '{value}' uses the '{match.group(1)}' storage backend; "
                "only a directory (dir:) rootfs can be adopted"
            )
        path = match.group(2)
    for fs in devices.findall("filesystem"):
        target = fs.find("target")
        if target is not None and target.get("dir") == "/":
            fs.set("type", "mount")
            src = fs.find("source")
            src.attrib.clear()
            src.set("dir", path)


def _fix_init(os_el, value: str) -> None:
    argv = value.split()
    if not argv:
        return
    os_el.find("init").text = argv[0]
    for old in os_el.findall("initarg"):
        os_el.remove(old)
    anchor = os_el.find("init")
    for arg in reversed(argv[1:]):
        el = etree.Element("initarg")
        el.text = arg
        anchor.addnext(el)


def _fix_dev_bind(devices, mount: dict, stat_fn) -> str | None:
    """Turn libvirt's block filesystem for a bind of a /dev path into what it is on the host.

    Returns how it was carried over ('bind mount', 'hostdev'), or None when it
    stays libvirt's block-device filesystem.
    """
    if "bind" not in mount["options"] and "rbind" not in mount["options"]:
        return None
    fs = next(
        (
            el
            for el in devices.findall("filesystem")
            if el.get("type") == "block"
            and el.find("target") is not None
            and os.path.normpath(el.find("target").get("dir", "")) == mount["target"]
        ),
        None,
    )
    if fs is None:
        return None
    try:
        mode = stat_fn(mount["source"]).st_mode
    except OSError:
        mode = stat.S_IFDIR  # not on this host (yet): a bind of a directory is the common case
    if stat.S_ISCHR(mode) and mount["source"] == mount["target"]:
        hostdev = etree.Element("hostdev", mode="capabilities", type="misc")
        etree.SubElement(etree.SubElement(hostdev, "source"), "char").text = mount["source"]
        fs.addprevious(hostdev)
        devices.remove(fs)
        return "hostdev"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return None
    fs.set("type", "mount")
    src = fs.find("source")
    src.attrib.clear()
    src.set("dir", mount["source"])
    return "bind mount"


def _device_rules_element(specs: list) -> object:
    el = etree.Element(f"{{{DEVICES_NS}}}devices", nsmap={DEVICES_PREFIX: DEVICES_NS})
    for spec in specs:
        etree.SubElement(
            el,
            f"{{{DEVICES_NS}}}rule",
            type=spec.type,
            major="*" if spec.major is None else str(spec.major),
            minor="*" if spec.minor is None else str(spec.minor),
            access=spec.access,
        )
    return el


def fix_up(guest: str, root, lines: list[tuple[int, str, str]], *, stat_fn=os.stat) -> dict:
    """Complete libvirt's conversion in place; returns the report.

    report = {carried_over: [{line, text, as}], not_converted: [{line, text, reason}]}
    """
    report: dict[str, list] = {"carried_over": [], "not_converted": []}
    uuid = root.find("uuid")
    if uuid is not None:
        root.remove(uuid)
    xmldef.ensure_child(root, "name").text = guest
    devices = xmldef.ensure_child(root, "devices")
    os_el = xmldef.ensure_child(root, "os")
    rule_specs = []
    has_memory = False
    for number, key, value in lines:
        net = NET_RE.fullmatch(key)
        if key in ("lxc.rootfs.path", "lxc.rootfs"):
            _fix_rootfs(guest, devices, value)
        elif key == "lxc.init.cmd":
            _fix_init(os_el, value)
            report["carried_over"].append(_entry(number, key, value, **{"as": "init"}))
        elif key == "lxc.mount.entry":
            mount = parse_mount_entry(value)
            if mount is None:
                report["not_converted"].append(_entry(number, key, value, reason="not an fstab line"))
            elif mount["target"] in BASIC_MOUNTS:
                report["not_converted"].append(
                    _entry(number, key, value, reason=f"libvirt mounts {mount['target']} in every guest itself")
                )
            elif mount["source"].startswith("/dev/"):
                how = _fix_dev_bind(devices, mount, stat_fn)
                if how:
                    report["carried_over"].append(_entry(number, key, value, **{"as": how}))
        elif key in DEVICE_RULE_KEYS:
            try:
                rule_specs.append(cgrules.parse_spec(value, option=key))
                report["carried_over"].append(_entry(number, key, value, **{"as": "cgroup_device rule"}))
            except KioskError as exc:
                report["not_converted"].append(_entry(number, key, value, reason=exc.msg))
        elif key in DEVICE_DENY_KEYS:
            reason = (
                "libvirt starts every guest from deny-all (plus its own defaults)"
                if value.strip() == "a"
                else "device deny rules are not carried over: remove the access with cgroup_device"
            )
            report["not_converted"].append(_entry(number, key, value, reason=reason))
        elif net:
            if net.group(2) not in NET_SUFFIXES:
                report["not_converted"].append(_entry(number, key, value, reason=DEFAULT_REASON))
        elif key in LIBVIRT_KEYS or key.startswith(LIBVIRT_PREFIXES):
            has_memory |= key == "lxc.cgroup.memory.limit_in_bytes"
        else:
            report["not_converted"].append(_entry(number, key, value, reason=_reason(key)))
    if rule_specs:
        meta = xmldef.ensure_child(root, "metadata")
        meta.append(_device_rules_element(rule_specs))
    if devices.find("console") is None:
        etree.SubElement(devices, "console", type="pty")
    if not has_memory:
        for tag in ("memory", "currentMemory"):
            el = xmldef.ensure_child(root, tag)
            el.attrib.clear()
            el.set("unit", "KiB")
            el.text = str(NEW_GUEST_MEMORY_KIB)
    return report


def convert(conn, guest: str, path: str, *, stat_fn=os.stat) -> tuple[object, dict]:
    """(domain definition tree, report) for the lxc-start config at path."""
    text = read_config(guest, path)
    lines = parse_lines(text)
    keys = {key for _n, key, _v in lines}
    if not keys & {"lxc.rootfs.path", "lxc.rootfs"}:
        raise KioskError(f"Guest '{guest}': from_native {path} has no lxc.rootfs.path, so there is nothing to adopt")
    if not keys & {"lxc.uts.name", "lxc.utsname"}:
        # libvirt's conversion needs a name; the guest's name is the one the module was given.
        text += f"\nlxc.uts.name = {guest}\n"
    try:
        xml = conn.domainXMLFromNative(NATIVE_FORMAT, text, 0)
    except libvirt.libvirtError as exc:
        raise KioskError(f"Guest '{guest}': from_native {path}: libvirt cannot convert it: {exc}") from exc
    root = xmldef.parse(xml, f"Guest '{guest}': libvirt's conversion of {path}")
    report = fix_up(guest, root, lines, stat_fn=stat_fn)
    report["config"] = path
    return root, report


# ------------------------------------------------------------------ the module's entry point

PASSED_ON = ("name", "state", "uri", "autostart", "restart", "shutdown_timeout")


def ensure(conn, params: dict, check_mode: bool = False) -> dict:
    """lxc_domain with from_native: convert, apply the other options on top, then ensure.

    The other definition options (memory, metadata, interfaces...) override
    what the conversion gave; `xml` cannot be combined with from_native.
    """
    name = speclib.validate_name(params.get("name"))
    if params.get("xml") is not None:
        raise KioskError(f"Guest '{name}': from_native cannot be combined with xml")
    overrides = speclib.validate({k: v for k, v in params.items() if k not in ("from_native", "xml")})
    if overrides.state == "absent":
        return manage.ensure(conn, {k: params.get(k) for k in PASSED_ON}, check_mode)
    root, report = convert(conn, name, params["from_native"])
    speclib.apply_spec(root, overrides)
    wanted = {k: params.get(k) for k in PASSED_ON}
    wanted["xml"] = xmldef.to_text(root)
    result = manage.ensure(conn, wanted, check_mode)
    result["native"] = report
    return result
