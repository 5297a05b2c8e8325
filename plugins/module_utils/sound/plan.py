# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure plan of sound_passthrough: what a guest's definition needs for its cards.

`desired(...)` turns the chosen cards and the profile into the devices the
guest needs; `make_mutate(desired)` returns the `mutate(root)` that
lxc_domain's edit_definition applies to an lxml copy of the persistent
definition. Everything this module adds is listed in the domain's
<metadata> under SOUND_NS, with the card selectors (for the hotplug agent),
so a later run - or state=absent - removes exactly what it added and
leaves what the user had.

- Each device node: <hostdev mode='capabilities' type='misc'> with
  <char>node</char>. libvirt gives that a device cgroup rule on v1 and v2
  (a <filesystem> bind of /dev/snd gets none); the bind of the host's snd
  directory is added too so the guest sees the real nodes, owners and modes.
- profile udev_data: a <filesystem type='ram'> for /run BEFORE the
  read-only bind of the host's /run/udev (systemd's /run tmpfs would hide
  the bind otherwise), so PulseAudio/PipeWire find SOUND_INITIALIZED.
- profile sysfs: seed 000's recipe, /sys/fs/fuse/connections and /sys
  passed through, plus a systemd-networkd drop-in `BindReadOnlyPaths=/sys`
  written into the guest rootfs (networkd leaves links pending with a
  writable /sys). Refused for a guest with an <idmap>: a user-namespaced
  guest is the confined one, and the host's /sys read-write is not for it.
  The drop-in is read and written through common.guestfs: the rootfs is the
  guest's, and a link planted there is refused, never followed.
"""

from __future__ import annotations

import os

from ansible_collections.kiosk.lxc.plugins.module_utils.common import guestfs
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.common.namespaces import (
    SOUND_NS,
    SOUND_PREFIX,
)
from ansible_collections.kiosk.lxc.plugins.module_utils.domain.xmldef import etree

PROFILES = ("udev_data", "sysfs")
RUN_RAM_KIB = 65536
NETWORKD_DROPIN = "etc/systemd/system/systemd-networkd.service.d/kiosk-sound-sysfs.conf"
NETWORKD_DROPIN_TEXT = (
    "# Written by kiosk.lxc.sound_passthrough (profile: sysfs): with the host's /sys\n"
    "# passed in read-write, systemd-networkd leaves every link pending.\n"
    "[Service]\n"
    "BindReadOnlyPaths=/sys\n"
)
_Q = f"{{{SOUND_NS}}}"


def _fs(target: str, source: str | None = None, *, kind: str = "mount", readonly=False) -> dict:
    return {"type": kind, "source": source, "target": target, "readonly": readonly}


def desired(
    *,
    cards: list[dict],
    shared_nodes: list[dict],
    selectors: list[dict] | None,
    profile: str = "udev_data",
    missing: str = "fail",
    state: str = "present",
    dev_dir: str = "/dev",
    udev_dir: str = "/run/udev",
    udev_available: bool = True,
) -> dict:
    """What the guest should have; state=absent wants nothing of ours.

    dev_dir is where the host's device nodes are, udev_dir the host's udev
    data (both differ from /dev and /run/udev only in tests).
    """
    if state == "absent":
        return {"state": "absent", "hostdevs": [], "filesystems": [], "dropin": False}
    nodes = [n["path"] for c in cards for n in c["nodes"]]
    if cards:
        nodes += [n["path"] for n in shared_nodes]
    filesystems = []
    for snd_dir in sorted({os.path.dirname(p) for p in nodes}):
        rel = os.path.relpath(snd_dir, dev_dir)
        filesystems.append(_fs("/dev/" + rel if rel != "." else "/dev", snd_dir))
    if profile == "udev_data":
        # Without the host's udev data (no card chosen, see check_udev) there is nothing to bind.
        if udev_available:
            filesystems.append(_fs("/run", kind="ram"))
            filesystems.append(_fs("/run/udev", udev_dir, readonly=True))
    else:
        # seed 000's order, the one seen working.
        filesystems.append(_fs("/sys/fs/fuse/connections", "/sys/fs/fuse/connections"))
        filesystems.append(_fs("/sys", "/sys"))
    return {
        "state": "present",
        "profile": profile,
        "missing": missing,
        "selectors": selectors,
        "hostdevs": sorted(set(nodes)),
        "filesystems": filesystems,
        "dropin": profile == "sysfs",
    }


# ---------------------------------------------------------------- the XML side
def _hostdev_chars(devices) -> dict:
    found = {}
    for hd in devices.findall("hostdev[@mode='capabilities'][@type='misc']"):
        char = hd.findtext("source/char")
        if char:
            found[char.strip()] = hd
    return found


def _filesystems(devices) -> dict:
    found = {}
    for fs in devices.findall("filesystem"):
        target = fs.find("target")
        if target is not None and target.get("dir"):
            found[os.path.normpath(target.get("dir"))] = fs
    return found


def _new_hostdev(char: str):
    hd = etree.Element("hostdev", mode="capabilities", type="misc")
    etree.SubElement(etree.SubElement(hd, "source"), "char").text = char
    return hd


def _new_filesystem(spec: dict):
    fs = etree.Element("filesystem", type=spec["type"], accessmode="passthrough")
    if spec["type"] == "ram":
        etree.SubElement(fs, "source", usage=str(RUN_RAM_KIB), units="KiB")
    else:
        etree.SubElement(fs, "source", dir=spec["source"])
    etree.SubElement(fs, "target", dir=spec["target"])
    if spec["readonly"]:
        etree.SubElement(fs, "readonly")
    return fs


def _insert_after_last(devices, tag: str, element) -> None:
    same = devices.findall(tag)
    if same:
        same[-1].addnext(element)
    else:
        emulator = devices.find("emulator")
        if emulator is not None:
            emulator.addnext(element)
        else:
            devices.insert(0, element)


def read_metadata(root) -> dict | None:
    """Our metadata in a domain definition, or None: selectors, profile, what we own."""
    el = root.find(f"metadata/{_Q}sound")
    if el is None:
        return None
    selectors = None
    if el.find(f"{_Q}all") is None:
        selectors = [dict(s.attrib) for s in el.findall(f"{_Q}select")]
    return {
        "profile": el.get("profile"),
        "missing": el.get("missing"),
        "selectors": selectors,
        "hostdevs": [o.get("key") for o in el.findall(f"{_Q}owned[@kind='hostdev']")],
        "filesystems": [o.get("key") for o in el.findall(f"{_Q}owned[@kind='filesystem']")],
    }


def _stripped(element) -> bytes:
    """An element's canonical form without the whitespace between elements."""
    copy = etree.fromstring(etree.tostring(element))
    for el in copy.iter():
        if el.text is not None and not el.text.strip():
            el.text = None
        if el.tail is not None and not el.tail.strip():
            el.tail = None
    return etree.tostring(copy, method="c14n")


def _sound_element(want: dict, owned_hostdevs, owned_fs):
    el = etree.Element(
        f"{_Q}sound",
        nsmap={SOUND_PREFIX: SOUND_NS},
        profile=want["profile"],
        missing=want["missing"],
    )
    if want["selectors"] is None:
        etree.SubElement(el, f"{_Q}all")
    for sel in want["selectors"] or []:
        etree.SubElement(el, f"{_Q}select", {k: sel[k] for k in sorted(sel)})
    for key in sorted(owned_hostdevs):
        etree.SubElement(el, f"{_Q}owned", kind="hostdev", key=key)
    for key in owned_fs:
        etree.SubElement(el, f"{_Q}owned", kind="filesystem", key=key)
    return el


def _write_metadata(root, want: dict, owned_hostdevs, owned_fs) -> None:
    """Our <metadata> element as `want` says; left untouched (whitespace too) when equal."""
    meta = root.find("metadata")
    old = meta.find(f"{_Q}sound") if meta is not None else None
    if want["state"] == "absent":
        if old is not None:
            meta.remove(old)
            if len(meta) == 0:
                root.remove(meta)
        return
    new = _sound_element(want, owned_hostdevs, owned_fs)
    if old is not None:
        if _stripped(old) != _stripped(new):
            new.tail = old.tail
            meta.replace(old, new)
        return
    if meta is None:
        meta = etree.Element("metadata")
        # libvirt's own order: metadata follows name/uuid/genid/title/description.
        anchor = None
        for tag in ("name", "uuid", "genid", "title", "description"):
            if root.find(tag) is not None:
                anchor = root.find(tag)
        if anchor is not None:
            anchor.addnext(meta)
        else:
            root.insert(0, meta)
    meta.append(new)


def _hidden_by_idmap(root, spec: dict) -> bool:
    """Whether spec is a bind of the host's /dev/snd into a guest with a user namespace.

    Under an idmap the host's nodes (root:audio on the host) show as
    nobody:nogroup and no one in the guest may open them. The guest then uses
    the nodes libvirt makes for each <hostdev> in its own /dev, owned by the
    guest's root, who gives them to the guest's audio group at boot
    (docs/least-privilege.md).
    """
    target = spec["target"]
    return root.find("idmap") is not None and spec["type"] == "mount" and (target + "/").startswith("/dev/")


def make_mutate(want: dict):
    """mutate(root) for edit_definition: brings the definition to `want`, in place."""

    def mutate(root) -> None:
        if want["state"] == "present" and want["profile"] == "sysfs" and root.find("idmap") is not None:
            raise KioskError(
                f"Guest '{root.findtext('name')}': profile sysfs passes the host's /sys in read-write, which a guest"
                " with an <idmap> (its own user namespace, profile confined) does not get; use profile udev_data"
            )
        devices = root.find("devices")
        if devices is None:
            devices = etree.SubElement(root, "devices")
        before = read_metadata(root) or {"hostdevs": [], "filesystems": []}
        want_chars = set(want["hostdevs"])
        want_fs = [f for f in want["filesystems"] if not _hidden_by_idmap(root, f)]
        want_targets = [os.path.normpath(f["target"]) for f in want_fs]

        # What we added before and is no longer wanted goes; the user's stays.
        chars = _hostdev_chars(devices)
        for char in before["hostdevs"]:
            if char not in want_chars and char in chars:
                devices.remove(chars[char])
        fss = _filesystems(devices)
        for target in before["filesystems"]:
            if target not in want_targets and target in fss:
                devices.remove(fss[target])

        owned_hostdevs = [c for c in before["hostdevs"] if c in want_chars]
        chars = _hostdev_chars(devices)
        for char in want["hostdevs"]:
            if char not in chars:
                _insert_after_last(devices, "hostdev", _new_hostdev(char))
                owned_hostdevs.append(char)

        owned_fs = [t for t in before["filesystems"] if t in want_targets]
        fss = _filesystems(devices)
        for spec in want_fs:
            target = os.path.normpath(spec["target"])
            if target not in fss:
                _insert_after_last(devices, "filesystem", _new_filesystem(spec))
                owned_fs.append(target)
        _write_metadata(root, want, owned_hostdevs, [t for t in want_targets if t in owned_fs])

    return mutate


# ---------------------------------------------------------------- the rootfs side
def guest_rootfs(root) -> str | None:
    """The host directory mounted as the guest's /, or None (the guest shares the host's)."""
    for fs in root.findall("devices/filesystem[@type='mount']"):
        target = fs.find("target")
        source = fs.find("source")
        if target is not None and target.get("dir") == "/" and source is not None:
            return source.get("dir")
    return None


def plan_dropin(rootfs: str | None, want: dict) -> dict | None:
    """The networkd drop-in change: {"rootfs", "path", "before", "content"} (content None = remove), or None.

    A link planted at the drop-in or on its way raises KioskError (GuestPathError) before anything is touched.
    """
    if rootfs is None:
        return None
    current = guestfs.read_file(rootfs, NETWORKD_DROPIN)
    wanted = NETWORKD_DROPIN_TEXT if want["dropin"] else None
    if current == wanted:
        return None
    return {"rootfs": rootfs, "path": os.path.join(rootfs, NETWORKD_DROPIN), "before": current, "content": wanted}


def apply_dropin(change: dict | None) -> None:
    if change is None:
        return
    if change["content"] is None:
        guestfs.remove_file(change["rootfs"], NETWORKD_DROPIN)
    else:
        guestfs.write_file(change["rootfs"], NETWORKD_DROPIN, change["content"], mode=0o644)
