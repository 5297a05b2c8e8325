# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""lxc_domain's options: validated into a Spec, then applied to a definition tree.

Plain Python, no ansible and no libvirt imports. `validate()` checks every
option before anything is touched and raises KioskError naming the option and
the cause. `apply_spec()` is the `mutate` lxc_domain hands to the shared
plan code (manage.py): it edits a copy of the stored definition, changing only
what the user gave, so omitted options keep their stored values. Every value
that goes into XML is set through lxml (escaped), never formatted into text.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from urllib.parse import urlparse

from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.common.namespaces import (
    META_NS,
    META_PREFIX,
)
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import xmldef
from ansible_collections.kiosk.lxc.plugins.module_utils.domain.xmldef import etree

NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
STATES = ("present", "running", "stopped", "absent")
RESTART_POLICIES = ("on_change", "never")
CAP_POLICIES = ("default", "allow", "deny")
FS_TYPES = ("mount", "ram")
# libvirt 9.0's <features><capabilities> children (virDomainProcessCapsFeature).
CAPABILITIES = frozenset(
    [
        "audit_control",
        "audit_write",
        "block_suspend",
        "chown",
        "dac_override",
        "dac_read_search",
        "fowner",
        "fsetid",
        "ipc_lock",
        "ipc_owner",
        "kill",
        "lease",
        "linux_immutable",
        "mac_admin",
        "mac_override",
        "mknod",
        "net_admin",
        "net_bind_service",
        "net_broadcast",
        "net_raw",
        "setgid",
        "setfcap",
        "setpcap",
        "setuid",
        "sys_admin",
        "sys_boot",
        "sys_chroot",
        "sys_module",
        "sys_nice",
        "sys_pacct",
        "sys_ptrace",
        "sys_rawio",
        "sys_resource",
        "sys_time",
        "sys_tty_config",
        "syslog",
        "wake_alarm",
    ]
)
MEMORY_UNITS = {"kib": 1, "mib": 1024, "gib": 1024**2}
# The metadata keys kiosk.lxc.guest records, and only it: prune removes a guest only when its `kiosk`
# names the kiosk, and a guest keeps the `profile` (its privileges) recorded. lxc_domain refuses to set
# them and keeps their stored values when it replaces its metadata, so no other module can mark a
# domain as a kiosk's guest, hide one from its prune, or change the privileges it is given.
GUEST_KEYS = {
    "kiosk": "the kiosk the guest belongs to (whose prune may remove it)",
    "profile": "the profile (privileges) the guest keeps",
}
# A new guest gets these where the options leave them out.
NEW_GUEST_INIT = "/sbin/init"
NEW_GUEST_MEMORY_KIB = 512 * 1024
# Options that describe the definition; `xml` replaces all of them.
DEFINITION_OPTIONS = [
    "rootfs",
    "init",
    "init_args",
    "memory",
    "vcpu",
    "capabilities",
    "filesystems",
    "interfaces",
    "hostdevs",
    "idmap",
    "privnet",
    "metadata",
]


@dataclass
class Spec:
    """Validated options; None means "leave as it is"."""

    name: str
    state: str = "running"
    restart: str = "on_change"
    shutdown_timeout: float = 30
    autostart: bool | None = None
    xml: object = None  # parsed <domain> element
    rootfs: str | None = None
    init: str | None = None
    init_args: list[str] | None = None
    memory_kib: int | None = None
    vcpu: int | None = None
    capabilities: dict | None = None
    filesystems: list[dict] | None = None
    interfaces: list[dict] | None = None
    hostdevs: list[str] | None = None
    idmap: dict | None = None
    privnet: bool | None = None
    metadata: dict[str, str] | None = None
    guest_keys: bool = False  # whether metadata sets GUEST_KEYS (kiosk.lxc.guest) or keeps the stored ones
    given: set = field(default_factory=set)


def validate_name(name) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise KioskError(
            f"Guest name {name!r} is invalid: use letters, digits, '.', '_' and '-', at most 64 characters"
        )
    return name


def check_choice(guest: str, option: str, value, choices) -> None:
    if value not in choices:
        raise KioskError(f"Guest '{guest}': {option} {value!r} is not one of {', '.join(choices)}")


def parse_memory(guest: str, option: str, value) -> int:
    """int = MiB, or a string '<n>[KiB|MiB|GiB]' (no unit = MiB); returns KiB."""
    if isinstance(value, bool):
        raise KioskError(f"Guest '{guest}': {option} must be a size such as 512MiB, not a boolean")
    if isinstance(value, int):
        number, unit = value, "mib"
    else:
        match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", str(value))
        if not match:
            raise KioskError(f"Guest '{guest}': {option} {value!r} is not a size such as 512MiB")
        number, unit = int(match.group(1)), (match.group(2) or "MiB").lower()
        if unit not in MEMORY_UNITS:
            raise KioskError(
                f"Guest '{guest}': {option} {value!r} has an unknown unit {match.group(2)!r} (use KiB, MiB or GiB)"
            )
    if number <= 0:
        raise KioskError(f"Guest '{guest}': {option} must be greater than zero")
    return number * MEMORY_UNITS[unit]


def _abs_path(guest: str, option: str, value) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise KioskError(f"Guest '{guest}': {option} {value!r} must be an absolute path")
    return os.path.normpath(value) if value != "/" else value


def _is_local(uri: str) -> bool:
    return not urlparse(uri or "").hostname


def validate(params: dict, *, guest_keys: bool = False) -> Spec:
    """Check every option (module parameter names) and return a Spec; raises KioskError.

    guest_keys: the caller is kiosk.lxc.guest, which alone sets the GUEST_KEYS of the metadata.
    """
    name = validate_name(params.get("name"))
    given = {k for k in DEFINITION_OPTIONS if params.get(k) is not None}
    spec = Spec(name=name, given=given, guest_keys=guest_keys)
    spec.state = params.get("state") or "running"
    check_choice(name, "state", spec.state, STATES)
    spec.restart = params.get("restart") or "on_change"
    check_choice(name, "restart", spec.restart, RESTART_POLICIES)
    timeout = params.get("shutdown_timeout", 30)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise KioskError(f"Guest '{name}': shutdown_timeout must be a number of seconds >= 0")
    spec.shutdown_timeout = timeout
    spec.autostart = params.get("autostart")
    if params.get("xml") is not None:
        if given:
            raise KioskError(f"Guest '{name}': xml cannot be combined with {', '.join(sorted(given))}")
        spec.xml = _validate_xml(name, params["xml"])
        return spec
    if params.get("rootfs") is not None:
        spec.rootfs = _abs_path(name, "rootfs", params["rootfs"])
        if _is_local(params.get("uri", "")) and not os.path.isdir(spec.rootfs):
            raise KioskError(f"Guest '{name}': rootfs {spec.rootfs} does not exist")
    if params.get("init") is not None:
        spec.init = _abs_path(name, "init", params["init"])
    if params.get("init_args") is not None:
        spec.init_args = [str(a) for a in params["init_args"]]
    if params.get("memory") is not None:
        spec.memory_kib = parse_memory(name, "memory", params["memory"])
    if params.get("vcpu") is not None:
        vcpu = params["vcpu"]
        if isinstance(vcpu, bool) or not isinstance(vcpu, int) or vcpu < 1:
            raise KioskError(f"Guest '{name}': vcpu must be a whole number >= 1")
        spec.vcpu = vcpu
    if params.get("capabilities") is not None:
        spec.capabilities = _validate_caps(name, params["capabilities"])
    if params.get("filesystems") is not None:
        spec.filesystems = _validate_list(name, "filesystems", params["filesystems"])
    if params.get("interfaces") is not None:
        spec.interfaces = _validate_list(name, "interfaces", params["interfaces"])
    if params.get("hostdevs") is not None:
        spec.hostdevs = [_abs_path(name, f"hostdevs[{i}]", p) for i, p in enumerate(params["hostdevs"])]
        if len(set(spec.hostdevs)) != len(spec.hostdevs):
            raise KioskError(f"Guest '{name}': hostdevs lists a device twice")
    if params.get("idmap") is not None:
        spec.idmap = _validate_idmap(name, params["idmap"])
    if params.get("privnet") is not None:
        spec.privnet = bool(params["privnet"])
    if params.get("metadata") is not None:
        spec.metadata = _validate_metadata(name, params["metadata"], guest_keys)
    return spec


def _validate_xml(name: str, text):
    if not isinstance(text, str) or not text.strip():
        raise KioskError(f"Guest '{name}': xml must be a domain XML document")
    root = xmldef.parse(text, f"Guest '{name}': xml")
    if root.tag != "domain":
        raise KioskError(f"Guest '{name}': xml has <{root.tag}> at the top, not <domain>")
    if root.get("type") != "lxc":
        raise KioskError(f"Guest '{name}': xml is a domain of type {root.get('type')!r}, not 'lxc'")
    xml_name = root.findtext("name")
    if xml_name is None:
        xmldef.ensure_child(root, "name").text = name
    elif xml_name != name:
        raise KioskError(f"Guest '{name}': xml names the guest {xml_name!r}, not {name!r}")
    keys = {item.get("key") for meta in root.findall(f"metadata/{{{META_NS}}}metadata") for item in meta}
    reserved = sorted(keys & set(GUEST_KEYS))
    if reserved:
        raise KioskError(
            f"Guest '{name}': xml sets the metadata key {reserved[0]!r}, which only kiosk.lxc.guest records"
            f" ({GUEST_KEYS[reserved[0]]}); leave it out, a defined guest's is kept"
        )
    return root


def _cap_name(guest: str, option: str, value) -> str:
    cap = str(value).strip().lower()
    cap = cap.removeprefix("cap_")
    if cap not in CAPABILITIES:
        raise KioskError(f"Guest '{guest}': {option} has an unknown capability {value!r}")
    return cap


def _validate_caps(name: str, caps) -> dict:
    if not isinstance(caps, dict):
        raise KioskError(f"Guest '{name}': capabilities must be a dict with policy, add, drop")
    unknown = set(caps) - {"policy", "add", "drop"}
    if unknown:
        raise KioskError(f"Guest '{name}': capabilities has unknown keys {sorted(unknown)}")
    policy = caps.get("policy") or "default"
    check_choice(name, "capabilities.policy", policy, CAP_POLICIES)
    add = [_cap_name(name, "capabilities.add", c) for c in caps.get("add") or []]
    drop = [_cap_name(name, "capabilities.drop", c) for c in caps.get("drop") or []]
    both = sorted(set(add) & set(drop))
    if both:
        raise KioskError(f"Guest '{name}': capabilities add and drop both name {', '.join(both)}")
    return {"policy": policy, "add": sorted(set(add)), "drop": sorted(set(drop))}


def _filesystem(name: str, opt: str, fs: dict) -> dict:
    kind = fs.get("type") or "mount"
    check_choice(name, f"{opt}.type", kind, FS_TYPES)
    target = _abs_path(name, f"{opt}.target", fs.get("target"))
    if target == "/":
        raise KioskError(f"Guest '{name}': {opt}.target is '/': set the root with rootfs")
    entry = {"type": kind, "target": target, "readonly": bool(fs.get("readonly", False))}
    if kind == "mount":
        entry["source"] = _abs_path(name, f"{opt}.source", fs.get("source"))
    else:
        if fs.get("size") is None:
            raise KioskError(f"Guest '{name}': {opt}.size is required for type ram")
        entry["size_kib"] = parse_memory(name, f"{opt}.size", fs["size"])
    return entry


def _interface(name: str, opt: str, iface: dict) -> dict:
    kinds = [k for k in ("bridge", "network") if iface.get(k)]
    if len(kinds) != 1:
        raise KioskError(f"Guest '{name}': {opt} needs exactly one of bridge and network")
    entry = {"type": kinds[0], "source": str(iface[kinds[0]]), "mac": None}
    if iface.get("mac") is not None:
        mac = str(iface["mac"]).strip().lower()
        if not MAC_RE.fullmatch(mac):
            raise KioskError(f"Guest '{name}': {opt}.mac {iface['mac']!r} is not a MAC address")
        if int(mac[:2], 16) & 1:
            raise KioskError(f"Guest '{name}': {opt}.mac {mac} is a multicast address")
        entry["mac"] = mac
    return entry


# The list options: what each entry needs, its check, the field no two entries may share, and what two then do.
LIST_OPTIONS = {
    "filesystems": ("source and target", _filesystem, "target", "mounts one target"),
    "interfaces": ("bridge or network", _interface, "mac", "uses one MAC address"),
}


def _validate_list(name: str, option: str, entries) -> list[dict]:
    """Each entry of a LIST_OPTIONS option checked (a dict, then its own check), and no shared field set twice."""
    needs, check, unique, twice = LIST_OPTIONS[option]
    out = []
    for i, item in enumerate(entries):
        opt = f"{option}[{i}]"
        if not isinstance(item, dict):
            raise KioskError(f"Guest '{name}': {opt} must be a dict with {needs}")
        out.append(check(name, opt, item))
    values = [e[unique] for e in out if e[unique]]
    if len(set(values)) != len(values):
        raise KioskError(f"Guest '{name}': {option} {twice} twice")
    return out


def _validate_idmap(name: str, idmap) -> dict:
    if not isinstance(idmap, dict):
        raise KioskError(f"Guest '{name}': idmap must be a dict with uid and gid")
    if not idmap:
        return {}
    out = {}
    for kind in ("uid", "gid"):
        entry = idmap.get(kind)
        if not isinstance(entry, dict):
            raise KioskError(f"Guest '{name}': idmap.{kind} is required (start, target, count)")
        values = {}
        for key in ("start", "target", "count"):
            value = entry.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise KioskError(f"Guest '{name}': idmap.{kind}.{key} must be a whole number >= 0")
            values[key] = value
        if values["count"] < 1:
            raise KioskError(f"Guest '{name}': idmap.{kind}.count must be at least 1")
        out[kind] = values
    return out


def _validate_metadata(name: str, metadata, guest_keys: bool) -> dict[str, str]:
    if not isinstance(metadata, dict):
        raise KioskError(f"Guest '{name}': metadata must be a dict of keys to values")
    out = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise KioskError(f"Guest '{name}': metadata keys must be non-empty strings")
        if key in GUEST_KEYS and not guest_keys:
            raise KioskError(
                f"Guest '{name}': metadata.{key} is reserved: only kiosk.lxc.guest records it"
                f" ({GUEST_KEYS[key]}); use another key"
            )
        if isinstance(value, (dict, list)) or value is None:
            raise KioskError(f"Guest '{name}': metadata.{key} must be a string or a number")
        out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


# ------------------------------------------------------------------ apply


def new_guest(name: str):
    """The tree a new guest starts from: the options are applied on top of it."""
    root = etree.Element("domain", type="lxc")
    xmldef.ensure_child(root, "name").text = name
    memory = xmldef.ensure_child(root, "memory")
    memory.set("unit", "KiB")
    memory.text = str(NEW_GUEST_MEMORY_KIB)
    os_el = xmldef.ensure_child(root, "os")
    xmldef.ensure_child(os_el, "type").text = "exe"
    xmldef.ensure_child(os_el, "init").text = NEW_GUEST_INIT
    devices = xmldef.ensure_child(root, "devices")
    etree.SubElement(devices, "console", type="pty")  # libvirt LXC wants one console
    return root


def mutator(spec: Spec):
    """The mutate(root) for the plan: the whole xml, or the options given."""
    if spec.xml is not None:
        return lambda root: replace_with_xml(root, spec.xml)
    return lambda root: apply_spec(root, spec)


def replace_with_xml(root, wanted) -> None:
    """Make root the user's XML, keeping the stored metadata of other namespaces and the GUEST_KEYS.

    Each <metadata> child in a namespace other than lxc_domain's belongs to
    another module (or tool): the stored element stays as it is; the XML's
    element is used only for a namespace the guest has none of. In lxc_domain's
    own, the keys kiosk.lxc.guest records keep their stored values.
    """
    kept = _stored_guest_keys(root)
    stored = {}
    meta = root.find("metadata")
    for child in meta if meta is not None else []:
        ns = etree.QName(child).namespace
        if ns != META_NS:
            stored.setdefault(ns, child)
    root.attrib.clear()
    root.attrib.update(wanted.attrib)
    root.text = None
    root[:] = [copy.deepcopy(c) for c in wanted]
    if kept:
        _set_metadata(root, {**xmldef.metadata_items(root), **kept})
    if not stored:
        return
    meta = xmldef.ensure_child(root, "metadata")
    kept = []
    for child in meta:
        ns = etree.QName(child).namespace
        if ns in stored:
            kept.append(copy.deepcopy(stored.pop(ns)))
        else:
            kept.append(child)
    kept.extend(copy.deepcopy(c) for c in stored.values())
    meta[:] = kept


def apply_spec(root, spec: Spec) -> None:
    """Edit root in place to what the options ask for; omitted options stay as stored."""
    if spec.memory_kib is not None:
        for tag in ("memory", "currentMemory"):
            el = xmldef.ensure_child(root, tag)
            el.attrib.clear()
            el.set("unit", "KiB")
            el.text = str(spec.memory_kib)
    if spec.vcpu is not None:
        xmldef.ensure_child(root, "vcpu").text = str(spec.vcpu)
    os_el = xmldef.ensure_child(root, "os")
    if spec.init is not None:
        xmldef.ensure_child(os_el, "init").text = spec.init
    if spec.init_args is not None:
        _set_init_args(os_el, spec.init_args)
    devices = xmldef.ensure_child(root, "devices")
    if spec.rootfs is not None:
        _set_rootfs(devices, spec.rootfs)
    if spec.filesystems is not None:
        _set_filesystems(devices, spec.filesystems)
    if spec.interfaces is not None:
        _set_interfaces(devices, spec.interfaces)
    if spec.hostdevs is not None:
        _set_hostdevs(devices, spec.hostdevs)
    if spec.idmap is not None:
        _set_idmap(root, spec.idmap)
    if spec.privnet is not None or spec.capabilities is not None:
        _set_features(root, spec.privnet, spec.capabilities)
    if spec.metadata is not None:
        kept = {} if spec.guest_keys else _stored_guest_keys(root)
        _set_metadata(root, {**spec.metadata, **kept})


def _set_init_args(os_el, args: list[str]) -> None:
    for old in os_el.findall("initarg"):
        os_el.remove(old)
    anchor = os_el.find("init")
    pos = list(os_el).index(anchor) + 1 if anchor is not None else len(os_el)
    for i, arg in enumerate(args):
        el = etree.Element("initarg")
        el.text = arg
        os_el.insert(pos + i, el)


def _fs_target(fs) -> str | None:
    target = fs.find("target")
    return None if target is None else target.get("dir")


def _set_rootfs(devices, rootfs: str) -> None:
    root_fs = next((fs for fs in devices.findall("filesystem") if _fs_target(fs) == "/"), None)
    if root_fs is None:
        root_fs = etree.Element("filesystem")
        etree.SubElement(root_fs, "target", dir="/")
        devices.insert(0, root_fs)
    root_fs.set("type", "mount")
    src = root_fs.find("source")
    if src is None:
        src = etree.Element("source")
        root_fs.insert(0, src)
    src.attrib.clear()
    src.set("dir", rootfs)


def _set_filesystems(devices, wanted: list[dict]) -> None:
    """Every filesystem but the root becomes the list, in order; a stored entry with the
    same target is reused, so sub-elements the options do not cover are kept."""
    stored = [fs for fs in devices.findall("filesystem") if _fs_target(fs) != "/"]
    by_target = {}
    for fs in stored:
        by_target.setdefault(_fs_target(fs), fs)
        devices.remove(fs)
    for entry in wanted:
        fs = by_target.pop(entry["target"], None)
        if fs is None:
            fs = etree.Element("filesystem")
            etree.SubElement(fs, "target", dir=entry["target"])
        fs.set("type", entry["type"])
        for tag in ("source", "readonly"):
            for old in fs.findall(tag):
                fs.remove(old)
        if entry["type"] == "mount":
            src = etree.Element("source", dir=entry["source"])
        else:
            src = etree.Element("source", usage=str(entry["size_kib"]), units="KiB")
        fs.insert(0, src)
        if entry["readonly"]:
            etree.SubElement(fs, "readonly")
        devices.append(fs)


def _set_interfaces(devices, wanted: list[dict]) -> None:
    """Interfaces become the list, in order; a stored interface that matches (by MAC,
    else by what it connects to, else by position) is reused, keeping its MAC."""
    stored = devices.findall("interface")
    for iface in stored:
        devices.remove(iface)
    by_mac = {}
    for iface in stored:
        mac = iface.find("mac")
        if mac is not None and mac.get("address"):
            by_mac[mac.get("address").lower()] = iface
    claimed = {e["mac"] for e in wanted if e["mac"]}
    unclaimed = [el for mac, el in by_mac.items() if mac not in claimed]
    unclaimed += [el for el in stored if el not in by_mac.values()]
    for pos, entry in enumerate(wanted):
        iface = by_mac.pop(entry["mac"], None) if entry["mac"] else None
        if iface is None and not entry["mac"]:
            key = (entry["type"], entry["source"])
            same = [el for el in unclaimed if xmldef.interface_key(el) == key]
            at_pos = [el for el in same if pos < len(stored) and stored[pos] is el]
            # else the unclaimed one at this position: it moves, keeping its MAC
            here = [el for el in unclaimed if pos < len(stored) and stored[pos] is el]
            iface = (at_pos or same or here or [None])[0]
            if iface is not None:
                unclaimed.remove(iface)
        if iface is None:
            iface = etree.Element("interface")
        iface.set("type", entry["type"])
        src = iface.find("source")
        if src is None:
            src = etree.SubElement(iface, "source")
        src.attrib.clear()
        src.set(entry["type"], entry["source"])
        if entry["mac"]:
            mac = iface.find("mac")
            if mac is None:
                mac = etree.Element("mac")
                iface.insert(0, mac)
            mac.set("address", entry["mac"])
        devices.append(iface)


def _is_misc_hostdev(el) -> bool:
    return el.get("mode") == "capabilities" and el.get("type") == "misc"


def _set_hostdevs(devices, paths: list[str]) -> None:
    stored = {}
    for el in devices.findall("hostdev"):
        if _is_misc_hostdev(el):
            stored.setdefault(el.findtext("source/char"), el)
            devices.remove(el)
    for path in paths:
        el = stored.get(path)
        if el is None:
            el = etree.Element("hostdev", mode="capabilities", type="misc")
            etree.SubElement(etree.SubElement(el, "source"), "char").text = path
        devices.append(el)


def _set_idmap(root, idmap: dict) -> None:
    old = root.find("idmap")
    if old is not None:
        root.remove(old)
    if not idmap:
        return
    el = etree.SubElement(root, "idmap")
    for kind in ("uid", "gid"):
        etree.SubElement(el, kind, {k: str(v) for k, v in idmap[kind].items()})


def _set_features(root, privnet: bool | None, caps: dict | None) -> None:
    features = xmldef.ensure_child(root, "features")
    if privnet is not None:
        old = features.find("privnet")
        if privnet and old is None:
            etree.SubElement(features, "privnet")
        elif not privnet and old is not None:
            features.remove(old)
    if caps is not None:
        old = features.find("capabilities")
        if old is not None:
            features.remove(old)
        el = etree.SubElement(features, "capabilities", policy=caps["policy"])
        for cap in caps["add"]:
            etree.SubElement(el, cap, state="on")
        for cap in caps["drop"]:
            etree.SubElement(el, cap, state="off")
    if len(features) == 0:
        root.remove(features)


def _stored_guest_keys(root) -> dict[str, str]:
    """The GUEST_KEYS items kiosk.lxc.guest recorded in a definition (lxc_domain keeps them)."""
    return {k: v for k, v in xmldef.metadata_items(root).items() if k in GUEST_KEYS}


def _set_metadata(root, metadata: dict[str, str]) -> None:
    """lxc_domain's own <metadata> child, replaced in place; others are not touched."""
    new = None
    if metadata:
        new = etree.Element(f"{{{META_NS}}}metadata", nsmap={META_PREFIX: META_NS})
        for key in sorted(metadata):
            item = etree.SubElement(new, f"{{{META_NS}}}item", key=key)
            item.text = metadata[key]
    xmldef.set_metadata(root, f"{{{META_NS}}}metadata", new)
