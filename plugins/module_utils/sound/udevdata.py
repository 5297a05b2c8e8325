# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A guest's own udev database: the records of the cards it was given, and nothing of the host's else.

Profile udev_data used to bind the host's whole /run/udev into the guest:
every host device's properties, disk serials (ID_SERIAL) among them. The
guest's sound server needs only its own cards' records (PulseAudio and
PipeWire skip a card whose record lacks SOUND_INITIALIZED; platform facts,
"Audio inside a guest"). So each guest gets a directory of its own on the
host, `<root>/<guest name>` (root: /var/lib/kiosk-lxc/udev), bound
read-only as its /run/udev, holding what libudev reads for a device:

- `data/<id>`: the record (`I:` when udev initialised it, `E:KEY=value`
  for each property udev's rules added, `G:`/`Q:` tags, `V:1`), where id
  is libudev's: `c<major>:<minor>` for a character node, `+sound:cardN` for
  the card itself;
- `tags/<tag>/<id>`: an empty file per tag, for enumeration by tag.

libudev enumerates devices from the guest's /sys (read-only, the host's)
and reads each one's record by id: a card given appears initialised with
its properties, every other device without any. The records are written
from what pyudev reads of the host's database (sound.discovery puts them
in each card and node as "udev"): a key that is not a plain name or a
value holding a control character is left out, never written as a line.

The directory is the host's: it is opened from / with common.guestfs
(no link followed on the way) and must be owned by the agent's user; the
files are written by common.files' one atomic writer. sound_passthrough and
the guest module write the chosen cards' records; the hotplug agent adds a
card's on attach, removes them on detach, and refreshes a guest's directory
from the cards present once per start of the guest and of the agent.

Plain Python, no ansible imports.
"""

from __future__ import annotations

import os
import re
import stat

from ansible_collections.kiosk.lxc.plugins.module_utils.common import files, guestfs, text
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.domain.spec import NAME_RE

DEFAULT_ROOT = "/var/lib/kiosk-lxc/udev"
# Properties the kernel's uevent (or libudev itself) gives; udevd does not write them into a record.
KERNEL_KEYS = frozenset(
    [
        "ACTION",
        "DEVPATH",
        "SUBSYSTEM",
        "DEVNAME",
        "DEVTYPE",
        "MAJOR",
        "MINOR",
        "SEQNUM",
        "USEC_INITIALIZED",
        "DRIVER",
        "IFINDEX",
        "DEVMODE",
        "DEVUID",
        "DEVGID",
        "DEVLINKS",
        "TAGS",
        "CURRENT_TAGS",
        "SYNTH_UUID",
    ]
)
KEY_RE = re.compile(r"[A-Za-z0-9_.]{1,128}")
TAG_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
ID_RE = re.compile(r"c\d+:\d+|\+sound:card\d+")


def device_id(device) -> str:
    """libudev's id of a device: c<major>:<minor> for a character node, +<subsystem>:<name> otherwise."""
    number = device.device_number
    if number and device.subsystem != "block":
        return f"c{os.major(number)}:{os.minor(number)}"
    return f"+{device.subsystem}:{device.sys_name}"


def record(device) -> dict:
    """{"id", "data", "tags"}: the device's record as udevd would write it, from what pyudev read."""
    lines = []
    usec = device.properties.get("USEC_INITIALIZED", "")
    if usec.isdigit():
        lines.append(f"I:{usec}")
    for key, value in sorted(device.properties.items()):
        if key not in KERNEL_KEYS and KEY_RE.fullmatch(key) and not text.has_control(value):
            lines.append(f"E:{key}={value}")
    tags = sorted(t for t in device.tags if TAG_RE.fullmatch(t))
    lines += [f"G:{t}" for t in tags] + [f"Q:{t}" for t in tags] + ["V:1"]
    return {"id": device_id(device), "data": "\n".join(lines) + "\n", "tags": tags}


def records(cards: list[dict], shared_nodes: list[dict]) -> dict:
    """{id: record} of the cards, their nodes and (with any card) the shared nodes."""
    found = {}
    for item in [*cards, *(n for c in cards for n in c["nodes"]), *(shared_nodes if cards else [])]:
        rec = item.get("udev")
        if rec is not None and ID_RE.fullmatch(rec["id"]):
            found[rec["id"]] = rec
    return found


def card_ids(card: dict, shared_nodes: list[dict]) -> list[str]:
    """The ids of a card, its nodes and the given shared nodes (known without udev: the card may be gone)."""
    ids = [f"+sound:{os.path.basename(card['sys_path'])}"]
    ids += [f"c{n['major']}:{n['minor']}" for n in [*card["nodes"], *shared_nodes]]
    return [i for i in ids if ID_RE.fullmatch(i)]


def guest_dir(root: str, guest: str) -> str:
    """root/<guest>; a guest name that is not a plain file name (lxc_domain's names are) is refused."""
    if guest in (".", "..") or not NAME_RE.fullmatch(guest):
        raise KioskError(f"Option domain: {text.quote(guest)} is not a guest name that can name a directory")
    return os.path.join(root, guest)


def _open(directory: str, create: bool) -> int | None:
    """An fd of the host directory, no link followed on the way, owned by us; None when missing."""
    rel = os.path.relpath(os.path.abspath(directory), "/")
    with guestfs.root_fd("/") as rfd:
        fd = guestfs.open_dir(rfd, rel, create=create, mode=0o755, shown=directory)
    if fd is not None and os.fstat(fd).st_uid != os.geteuid():
        uid = os.fstat(fd).st_uid
        os.close(fd)
        raise KioskError(f"udev data {directory}: owned by uid {uid}, not by uid {os.geteuid()}; refused")
    return fd


def _sub(dir_fd: int, name: str, create: bool) -> int | None:
    return guestfs.open_dir(dir_fd, name, create=create, mode=0o755, shown=name)


def _current(directory: str) -> dict:
    """{id: data} of the records in directory/data (regular files only)."""
    fd = _open(directory, create=False)
    if fd is None:
        return {}
    try:
        data = _sub(fd, "data", create=False)
        if data is None:
            return {}
        try:
            found = {}
            for name in os.listdir(data):
                if ID_RE.fullmatch(name):
                    found[name] = guestfs.read_at(data, name, f"{directory}/data/{name}")
            return found
        finally:
            os.close(data)
    finally:
        os.close(fd)


def plan(directory: str, want: dict | None) -> dict | None:
    """The change that makes directory hold exactly the records in want, or None when it does already.

    {"path", "write": {id: record}, "remove": [id], "drop": bool}; want None
    drops the directory itself (the guest no longer binds it).
    """
    exists = _open(directory, create=False)
    if exists is not None:
        os.close(exists)
    have = _current(directory)
    if want is None:
        return {"path": directory, "write": {}, "remove": sorted(have), "drop": True} if exists is not None else None
    write = {i: r for i, r in want.items() if have.get(i) != r["data"]}
    remove = sorted(set(have) - set(want))
    if not write and not remove and exists is not None:
        return None
    return {"path": directory, "write": write, "remove": remove, "drop": False}


def describe(change: dict) -> str:
    if change.get("drop"):
        return f"remove the guest's udev data {change['path']}"
    return (
        f"write the udev data of {len(change['write'])} and remove that of {len(change['remove'])}"
        f" devices in {change['path']}"
    )


def _unlink(dir_fd: int, name: str) -> bool:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        return False
    os.unlink(name, dir_fd=dir_fd)
    return True


def apply(change: dict | None) -> list[str]:
    """Write and remove the change's records (atomically, each); the steps done."""
    if change is None:
        return []
    if change.get("drop"):
        return _drop(change["path"])
    fd = _open(change["path"], create=True)
    try:
        data = _sub(fd, "data", create=True)
        tags = _sub(fd, "tags", create=True)
        try:
            for ident in change["remove"]:
                _unlink(data, ident)
                for tag in os.listdir(tags):
                    if TAG_RE.fullmatch(tag):
                        tag_fd = _sub(tags, tag, create=False)
                        try:
                            _unlink(tag_fd, ident)
                        finally:
                            os.close(tag_fd)
            for ident, rec in sorted(change["write"].items()):
                files.write_at(data, ident, rec["data"], mode=0o644)
                for tag in rec["tags"]:
                    tag_fd = _sub(tags, tag, create=True)
                    try:
                        files.write_at(tag_fd, ident, "", mode=0o644)
                    finally:
                        os.close(tag_fd)
        finally:
            os.close(data)
            os.close(tags)
    finally:
        os.close(fd)
    return [describe(change)] if change["write"] or change["remove"] else []


def _drop(directory: str) -> list[str]:
    """The directory and what this module put in it (data/, tags/<tag>/) removed; anything else keeps it."""
    fd = _open(directory, create=False)
    if fd is None:
        return []
    try:
        for sub in ("tags", "data"):
            sub_fd = _sub(fd, sub, create=False)
            if sub_fd is None:
                continue
            try:
                for name in os.listdir(sub_fd):
                    if sub == "tags" and TAG_RE.fullmatch(name):
                        tag_fd = _sub(sub_fd, name, create=False)
                        try:
                            for ident in os.listdir(tag_fd):
                                _unlink(tag_fd, ident)
                        finally:
                            os.close(tag_fd)
                        os.rmdir(name, dir_fd=sub_fd)
                    elif sub == "data":
                        _unlink(sub_fd, name)
            finally:
                os.close(sub_fd)
            os.rmdir(sub, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(directory)
    return [f"remove the guest's udev data {directory}"]
