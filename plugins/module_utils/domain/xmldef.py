# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Libvirt LXC domain definitions as lxml trees: parse, normalise, compare, describe.

Plain Python, no ansible and no libvirt imports. The comparison is what makes
lxc_domain honest: both sides are normalised the way libvirt 9.0 stores a
definition (units in KiB, the defaults it fills in, its element order), then
compared field by field, so a redefine happens only when a field differs.

What libvirt fills in on define, and how it is treated here:
  - per host or per guest (uuid, interface MACs, os/type@arch, devices/emulator,
    resource/partition after the first start): `inherit()` copies them from the
    stored definition into the desired one when it lacks them;
  - constants (currentMemory = memory, vcpu 1 placement static, clock utc,
    on_poweroff/on_reboot/on_crash, filesystem accessmode passthrough, console
    target lxc/port): `normalise()` writes them into both sides.
"""

from __future__ import annotations

import copy
import math

# The only import of lxml in module_utils: the rest takes `etree` from here.
LXML_IMPORT_ERROR = None
try:
    from lxml import etree
except ImportError as _exc:  # pragma: no cover - ansible-test's import sanity runs without lxml
    etree, LXML_IMPORT_ERROR = None, _exc

from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.common.namespaces import META_NS

# libvirt's scaled-integer units (virScaleInteger), in bytes; no unit means KiB.
_SCALE = {"b": 1, "byte": 1, "bytes": 1}
for _i, _p in enumerate("kmgtpe", start=1):
    _SCALE[_p] = _SCALE[f"{_p}ib"] = 1024**_i
    _SCALE[f"{_p}b"] = 1000**_i

# The order libvirt formats top-level elements, os children and devices in.
# Both sides of a comparison are sorted the same way (stably), so only the
# relative order of same-named elements (mounts, interfaces) matters.
TOP_ORDER = [
    "name",
    "uuid",
    "genid",
    "title",
    "description",
    "metadata",
    "maxMemory",
    "memory",
    "currentMemory",
    "blkiotune",
    "memtune",
    "memoryBacking",
    "vcpu",
    "vcpus",
    "iothreads",
    "cputune",
    "numatune",
    "resource",
    "sysinfo",
    "bootloader",
    "bootloader_args",
    "os",
    "idmap",
    "features",
    "cpu",
    "clock",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "pm",
    "perf",
    "devices",
    "seclabel",
    "keywrap",
    "launchSecurity",
]
OS_ORDER = "type loader nvram kernel initrd cmdline init initarg initenv initdir inituser initgroup"
OS_ORDER = OS_ORDER.split()
DEVICE_ORDER = [
    "emulator",
    "disk",
    "controller",
    "lease",
    "filesystem",
    "interface",
    "smartcard",
    "serial",
    "parallel",
    "console",
    "channel",
    "input",
    "tpm",
    "graphics",
    "sound",
    "audio",
    "video",
    "hostdev",
    "redirdev",
    "redirfilter",
    "hub",
    "watchdog",
    "memballoon",
    "rng",
    "shmem",
    "memory",
    "iommu",
    "vsock",
    "crypto",
    "panic",
]
LIFECYCLE_DEFAULTS = (("on_poweroff", "destroy"), ("on_reboot", "restart"), ("on_crash", "destroy"))


def _require_lxml() -> None:
    if etree is None:
        raise KioskError("The python lxml library is required", exception=str(LXML_IMPORT_ERROR))


def parse(text: str | bytes, what: str = "domain XML"):
    """Parse XML safely (no entities, no network); KioskError naming `what` when malformed."""
    _require_lxml()
    parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True, remove_pis=True)
    data = text.encode("utf-8") if isinstance(text, str) else text
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise KioskError(f"{what} is not well-formed XML: {exc}") from exc
    return root


def to_text(root, pretty: bool = True) -> str:
    return etree.tostring(root, encoding="unicode", pretty_print=pretty)


def to_kib(value: str, unit: str | None) -> int:
    """A libvirt scaled integer in KiB, rounded up as libvirt does; ValueError if not one."""
    scale = _SCALE[(unit or "KiB").strip().lower()]
    return math.ceil(int(value.strip()) * scale / 1024)


def local(tag) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else str(tag)


def _sub(parent, tag: str, text: str | None = None, **attrib):
    el = etree.SubElement(parent, tag, {k: str(v) for k, v in attrib.items()})
    if text is not None:
        el.text = str(text)
    return el


def ensure_child(parent, tag: str):
    """parent/tag, created (appended) when missing."""
    found = parent.find(tag)
    return found if found is not None else _sub(parent, tag)


def metadata_items(root) -> dict[str, str]:
    """lxc_domain's metadata of a definition tree: its items, key to value."""
    meta = root.find(f"metadata/{{{META_NS}}}metadata")
    return {item.get("key"): item.text or "" for item in (meta if meta is not None else [])}


def set_metadata(root, tag: str, new) -> None:
    """Put `new` in place of root's <metadata> child `tag` (a {namespace}name), or remove it when new is None.

    The other children of <metadata> (other modules' namespaces, foreign ones) stay as they are;
    a <metadata> left empty goes.
    """
    meta = ensure_child(root, "metadata")
    own = meta.find(tag)
    if own is not None and new is not None:
        meta.replace(own, new)
    elif own is not None:
        meta.remove(own)
    elif new is not None:
        meta.append(new)
    if len(meta) == 0:
        root.remove(meta)


def _sort_children(el, order: list[str]) -> None:
    rank = {tag: i for i, tag in enumerate(order)}
    children = list(el)
    children.sort(key=lambda c: rank.get(local(c.tag), len(order)))
    el[:] = children


def _strip_blank(root) -> None:
    for el in root.iter():
        if not isinstance(el.tag, str):  # comments, processing instructions
            el.getparent().remove(el)
            continue
        if len(el) and el.text is not None and not el.text.strip():
            el.text = None
        if el.tail is not None and not el.tail.strip():
            el.tail = None


def _scaled_to_kib(el, value_of, unit_attr: str) -> int | None:
    """The scaled integer in KiB (el's unit set to KiB), or None when it is not one."""
    try:
        kib = to_kib(value_of(el), el.get(unit_attr))
    except (KeyError, ValueError, AttributeError):
        return
    el.set(unit_attr, "KiB")
    return kib


def normalise(root):
    """A normalised copy of a domain definition, for comparing and showing."""
    _require_lxml()
    root = copy.deepcopy(root)
    _strip_blank(root)
    for tag in ("memory", "currentMemory", "maxMemory"):
        el = root.find(tag)
        if el is not None:
            kib = _scaled_to_kib(el, lambda e: e.text, "unit")
            if kib is not None:
                el.text = str(kib)
    memory = root.find("memory")
    if memory is not None and root.find("currentMemory") is None:
        _sub(root, "currentMemory", memory.text, unit=memory.get("unit", "KiB"))
    vcpu = root.find("vcpu")
    if vcpu is None:
        vcpu = _sub(root, "vcpu", "1")
    vcpu.set("placement", vcpu.get("placement", "static"))
    if root.find("clock") is None:
        _sub(root, "clock", offset="utc")
    for tag, default in LIFECYCLE_DEFAULTS:
        if root.find(tag) is None:
            _sub(root, tag, default)
    _normalise_features(root)
    _normalise_devices(root)
    metadata = root.find("metadata")
    if metadata is not None and len(metadata) == 0:
        root.remove(metadata)
    os_el = root.find("os")
    if os_el is not None:
        _sort_children(os_el, OS_ORDER)
    idmap = root.find("idmap")
    if idmap is not None:
        _sort_children(idmap, ["uid", "gid"])
    _sort_children(root, TOP_ORDER)
    return root


def _normalise_features(root) -> None:
    features = root.find("features")
    if features is None:
        return
    caps = features.find("capabilities")
    if caps is not None:
        caps.set("policy", caps.get("policy", "default"))
        if caps.get("policy") == "default" and len(caps) == 0:
            features.remove(caps)  # libvirt drops it too
        else:
            caps[:] = sorted(caps, key=lambda c: local(c.tag))
    features[:] = sorted(features, key=lambda c: local(c.tag))
    if len(features) == 0:
        root.remove(features)


def _normalise_devices(root) -> None:
    devices = root.find("devices")
    if devices is None:
        return
    for fs in devices.findall("filesystem"):
        fs.set("type", fs.get("type", "mount"))
        fs.set("accessmode", fs.get("accessmode", "passthrough"))
        src = fs.find("source")
        if fs.get("type") == "ram" and src is not None:
            kib = _scaled_to_kib(src, lambda e: e.get("usage"), "units")
            if kib is not None:
                src.set("usage", str(kib))
    for mac in devices.findall("interface/mac"):
        if mac.get("address"):
            mac.set("address", mac.get("address").lower())
    for port, console in enumerate(devices.findall("console")):
        if console.find("target") is None:
            _sub(console, "target", type="lxc", port=str(port))
    _sort_children(devices, DEVICE_ORDER)


def interface_key(iface) -> tuple[str, str]:
    """(type, what it connects to): how an interface is recognised across definitions."""
    src = iface.find("source")
    attrs = {} if src is None else src.attrib
    kind = iface.get("type", "")
    wanted = {"network": "network", "bridge": "bridge"}.get(kind, "dev")
    return kind, attrs.get(wanted, "")


def inherit(desired, current) -> None:
    """Copy into desired what libvirt generated for the stored guest and desired leaves out.

    The uuid (a redefine without it fails), interface MACs (matched by what the
    interface connects to, same position first), os/type@arch, the emulator
    path and the resource partition.
    """
    if current is None:
        return
    for tag in ("uuid", "resource"):
        if desired.find(tag) is None and current.find(tag) is not None:
            desired.append(copy.deepcopy(current.find(tag)))
    d_type, c_type = desired.find("os/type"), current.find("os/type")
    if d_type is not None and c_type is not None and "arch" not in d_type.attrib and c_type.get("arch"):
        d_type.set("arch", c_type.get("arch"))
    d_dev, c_dev = desired.find("devices"), current.find("devices")
    if d_dev is None or c_dev is None:
        return
    if d_dev.find("emulator") is None and c_dev.find("emulator") is not None:
        d_dev.insert(0, copy.deepcopy(c_dev.find("emulator")))
    _inherit_macs(d_dev.findall("interface"), c_dev.findall("interface"))


def _inherit_macs(wanted: list, stored: list) -> None:
    def mac_of(el):
        m = el.find("mac")
        return None if m is None else (m.get("address") or "").lower() or None

    claimed = {mac_of(el) for el in wanted} - {None}
    free = [el for el in stored if mac_of(el) and mac_of(el) not in claimed]
    for pos, iface in enumerate(wanted):
        if mac_of(iface):
            continue
        same_key = [el for el in free if interface_key(el) == interface_key(iface)]
        if not same_key:
            continue
        at_pos = [el for el in same_key if pos < len(stored) and stored[pos] is el]
        match = (at_pos or same_key)[0]
        free.remove(match)
        iface.insert(0, copy.deepcopy(match.find("mac")))


def diff_fields(before, after, path: str = "") -> list[str]:
    """Paths of the fields that differ between two normalised trees, e.g. `memory`,
    `devices/interface[2]/source@bridge`, `devices/hostdev[1] (added)`."""
    if before.tag != after.tag:
        return [path or local(after.tag)]
    out = [
        f"{path}@{key}" for key in sorted(set(before.attrib) | set(after.attrib)) if before.get(key) != after.get(key)
    ]
    if (before.text or "") != (after.text or ""):
        out.append(path or local(after.tag))
    tags: list = []
    for child in [*before, *after]:
        if child.tag not in tags:
            tags.append(child.tag)
    for tag in tags:
        b_list, a_list = before.findall(tag), after.findall(tag)
        many = max(len(b_list), len(a_list)) > 1
        name = _label(b_list[0] if b_list else a_list[0])
        for i in range(max(len(b_list), len(a_list))):
            sub = f"{name}[{i + 1}]" if many else name
            sub = f"{path}/{sub}" if path else sub
            if i >= len(b_list):
                out.append(f"{sub} (added)")
            elif i >= len(a_list):
                out.append(f"{sub} (removed)")
            else:
                out.extend(diff_fields(b_list[i], a_list[i], sub))
    return out


def _label(el) -> str:
    name = local(el.tag)
    return f"{el.prefix}:{name}" if el.prefix else name


def describe(root) -> dict:
    """The fields users manage, read from a (normalised) definition.

    lxc_domain_info returns this, and lxc_domain compares it between the running
    and the stored definition to tell whether a restart is pending (the live XML
    carries runtime-only extras, which this leaves out).
    """
    memory = root.find("memory")
    caps = root.find("features/capabilities")
    idmap = root.find("idmap")
    info = {
        "name": root.findtext("name"),
        "memory_kib": int(memory.text) if memory is not None else None,
        "vcpu": int(root.findtext("vcpu") or 1),
        "init": root.findtext("os/init"),
        "init_args": [el.text or "" for el in root.findall("os/initarg")],
        "privnet": root.find("features/privnet") is not None,
        "capabilities": {
            "policy": caps.get("policy", "default") if caps is not None else "default",
            "add": [local(c.tag) for c in caps if c.get("state") == "on"] if caps is not None else [],
            "drop": [local(c.tag) for c in caps if c.get("state") == "off"] if caps is not None else [],
        },
        "idmap": {
            el.tag: {k: int(el.get(k, "0")) for k in ("start", "target", "count")}
            for el in (idmap if idmap is not None else [])
        },
        "mounts": [_describe_fs(fs) for fs in root.findall("devices/filesystem")],
        "interfaces": [_describe_iface(el) for el in root.findall("devices/interface")],
        "hostdevs": [
            el.findtext("source/char")
            for el in root.findall("devices/hostdev")
            if el.get("mode") == "capabilities" and el.get("type") == "misc"
        ],
        "metadata": metadata_items(root),
    }
    info["memory"] = format_kib(info["memory_kib"])
    return info


def format_kib(kib: int | None) -> str | None:
    """KiB as the largest whole unit the lxc_domain `memory` option accepts."""
    if kib is None:
        return None
    for unit, scale in (("GiB", 1024**2), ("MiB", 1024)):
        if kib % scale == 0:
            return f"{kib // scale}{unit}"
    return f"{kib}KiB"


def _describe_fs(fs) -> dict:
    src = fs.find("source")
    src_attrs = {} if src is None else dict(src.attrib)
    out = {
        "type": fs.get("type", "mount"),
        "source": src_attrs.get("dir") or src_attrs.get("file") or src_attrs.get("dev"),
        "target": fs.find("target").get("dir") if fs.find("target") is not None else None,
        "readonly": fs.find("readonly") is not None,
    }
    if out["type"] == "ram":
        out["size"] = format_kib(int(src_attrs["usage"])) if "usage" in src_attrs else None
    return out


def _describe_iface(iface) -> dict:
    kind, source = interface_key(iface)
    mac = iface.find("mac")
    return {
        "type": kind,
        "source": source,
        "mac": mac.get("address") if mac is not None else None,
    }
