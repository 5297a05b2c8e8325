# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every ALSA card on the host, as udev knows it.

Reads udev through pyudev (so it runs unchanged under umockdev in tests) and,
for the card's long name, /proc/asound/cards. Plain Python, no ansible
imports: the caller passes the pyudev context, the proc root and the
directory the host's device nodes live in.
"""

from __future__ import annotations

import os
import re

from ansible_collections.kiosk.lxc.plugins.module_utils.common import procfs
from ansible_collections.kiosk.lxc.plugins.module_utils.sound import udevdata

try:
    import pyudev
except ImportError:  # pragma: no cover - reported by the module
    pyudev = None

# ALSA's per-card device nodes (sound/core/*.c name them so).
CARD_NODE_RE = re.compile(r"(controlC(\d+)|pcmC(\d+)D\d+[pc]|hwC(\d+)D\d+|midiC(\d+)D\d+)")
# Nodes every card needs beside its own: the ALSA timer and sequencer.
SHARED_NODES = ("timer", "seq")


def read_proc_cards(proc_root: str = "/proc") -> dict[int, dict]:
    """/proc/asound/cards as {number: {"id", "alsa_driver", "name"}}; {} without ALSA or when forged."""
    return procfs.asound_cards(os.path.join(proc_root, "asound", "cards"))


def _node_info(device, dev_udev: str, dev_dir: str) -> dict:
    """One device node: its name, host path, major and minor."""
    node = device.device_node
    if dev_dir != dev_udev and node.startswith(dev_udev.rstrip("/") + "/"):
        node = dev_dir.rstrip("/") + node[len(dev_udev.rstrip("/")) :]
    return {
        "name": device.sys_name,
        "path": node,
        "major": int(device.properties["MAJOR"]),
        "minor": int(device.properties["MINOR"]),
    }


def _usb_device(card):
    for parent in card.ancestors:
        if parent.subsystem == "usb" and parent.device_type == "usb_device":
            return parent
    return None


def _attr(device, name: str) -> str | None:
    value = device.attributes.get(name) if device is not None else None
    if value is None:
        return None
    return value.decode("utf-8", "replace").strip()


def _card_info(card, nodes: list[dict], proc: dict) -> dict:
    number = int(_attr(card, "number") or card.sys_name[len("card") :])
    usb = _usb_device(card)
    usb_info = None
    if usb is not None:
        usb_info = {
            "vendor": (_attr(usb, "idVendor") or card.get("ID_VENDOR_ID") or "").lower(),
            "product": (_attr(usb, "idProduct") or card.get("ID_MODEL_ID") or "").lower(),
            "serial": _attr(usb, "serial") or card.get("ID_SERIAL_SHORT"),
            "name": _attr(usb, "product"),
        }
    parent = card.parent
    name = (
        proc.get(number, {}).get("name")
        or (usb_info or {}).get("name")
        or card.get("ID_MODEL_FROM_DATABASE")
        or card.sys_name
    )
    return {
        "number": number,
        "id": _attr(card, "id") or proc.get(number, {}).get("id"),
        "name": name,
        "driver": parent.driver if parent is not None else None,
        "usb": usb_info,
        "path": card.get("ID_PATH"),
        "sys_path": card.sys_path,
        "nodes": sorted(nodes, key=lambda n: n["name"]),
    }


def _with_record(info: dict, device, records: bool) -> dict:
    if records:
        info["udev"] = udevdata.record(device)
    return info


def public(card: dict) -> dict:
    """A card as a module returns it: without the udev records discover(records=True) added."""
    out = {k: v for k, v in card.items() if k != "udev"}
    if "nodes" in out:
        out["nodes"] = [{k: v for k, v in n.items() if k != "udev"} for n in out["nodes"]]
    return out


def discover(context=None, *, proc_root: str = "/proc", dev_dir: str | None = None, records: bool = False) -> dict:
    """All ALSA cards and the shared nodes: {"cards": [...], "shared_nodes": [...]}.

    context: a pyudev.Context (a fresh one when None). dev_dir: where the
    host's device nodes are, when not where udev says (tests make fake card
    nodes under a temporary directory). records: each card and node also
    holds its udev record as "udev" (sound.udevdata), for the guest's own
    udev data; public() takes it out again for what a module returns.
    """
    context = context if context is not None else pyudev.Context()
    dev_udev = context.device_path
    dev_dir = dev_dir or dev_udev
    proc = read_proc_cards(proc_root)
    cards = {}
    nodes: dict[str, list[dict]] = {}
    shared = []
    for device in context.list_devices(subsystem="sound"):
        name = device.sys_name
        if re.fullmatch(r"card\d+", name) and device.device_node is None:
            cards[device.sys_path] = device
        elif device.device_node is None or "MAJOR" not in device.properties:
            continue
        elif name in SHARED_NODES:
            shared.append(_with_record(_node_info(device, dev_udev, dev_dir), device, records))
        elif CARD_NODE_RE.fullmatch(name) and device.parent is not None:
            node = _with_record(_node_info(device, dev_udev, dev_dir), device, records)
            nodes.setdefault(device.parent.sys_path, []).append(node)
    infos = [_with_record(_card_info(card, nodes.get(path, []), proc), card, records) for path, card in cards.items()]
    return {
        "cards": sorted(infos, key=lambda c: c["number"]),
        "shared_nodes": sorted(shared, key=lambda n: n["name"]),
    }
