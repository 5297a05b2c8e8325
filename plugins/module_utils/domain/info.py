# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What lxc_domain_info reports about guests: state, definition fields, leased IPs.

Plain Python, no ansible imports. IPs come from dnsmasq lease files: the
kiosk.lxc.lxc_bridge module keeps one per bridge at
<leases_dir>/<bridge>.leases (lines `expiry mac ip hostname clientid`, read
with lxc_bridge's reader); for an interface on a libvirt network, from that
network's own DHCP leases.
"""

from __future__ import annotations

import os
import time

from ansible_collections.kiosk.lxc.plugins.module_utils.bridge import dnsmasq
from ansible_collections.kiosk.lxc.plugins.module_utils.bridge.spec import DEFAULT_STATE_DIR
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.common.virt import libvirt
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import manage, xmldef
from ansible_collections.kiosk.lxc.plugins.module_utils.domain.spec import validate_name

DEFAULT_LEASES_DIR = DEFAULT_STATE_DIR  # where lxc_bridge keeps <bridge>.leases


def read_leases(path: str, now: float | None = None) -> dict[str, list[str]]:
    """MAC (lower case) -> IPs from a dnsmasq lease file ({} when there is none).

    The file is parsed by lxc_bridge's own reader; expired leases are left out
    (expiry 0 means it never expires).
    """
    now = time.time() if now is None else now
    out: dict[str, list[str]] = {}
    for lease in dnsmasq.read_leases(path):
        if lease["expiry"] and lease["expiry"] < now:
            continue
        ips = out.setdefault(lease["mac"], [])
        if lease["ip"] not in ips:
            ips.append(lease["ip"])
    return out


def _network_leases(conn, network: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    try:
        leases = conn.networkLookupByName(network).DHCPLeases()
    except libvirt.libvirtError:
        return out
    for lease in leases:
        out.setdefault((lease.get("mac") or "").lower(), []).append(lease.get("ipaddr"))
    return out


def guest_info(conn, name: str, leases_dir: str = DEFAULT_LEASES_DIR) -> dict | None:
    """One guest's facts, or None when it is not defined."""
    guest = manage.read_guest(conn, name)
    if guest.dom is None:
        return None
    info = xmldef.describe(xmldef.normalise(xmldef.parse(guest.xml)))
    rootfs = [m["source"] for m in info["mounts"] if m["target"] == "/"]
    leases: dict[tuple, dict] = {}
    for iface in info["interfaces"]:
        key = (iface["type"], iface["source"])
        if key not in leases:
            if iface["type"] == "bridge":
                path = os.path.join(leases_dir, f"{iface['source']}.leases")
                leases[key] = read_leases(path)
            elif iface["type"] == "network":
                leases[key] = _network_leases(conn, iface["source"])
            else:
                leases[key] = {}
        iface["ips"] = leases[key].get((iface["mac"] or "").lower(), [])
    info.update(
        state=guest.state,
        autostart=guest.autostart,
        uuid=guest.uuid,
        persistent=guest.persistent,
        rootfs=rootfs[0] if rootfs else None,
        restart_pending=manage.live_differs(guest),
    )
    return info


def gather(conn, names: list[str] | None = None, leases_dir: str = DEFAULT_LEASES_DIR) -> dict:
    """{guests: [facts, by name], missing: [asked-for names not defined]}."""
    if names:
        for n in names:
            validate_name(n)
        wanted = list(dict.fromkeys(names))
    else:
        try:
            wanted = sorted(d.name() for d in conn.listAllDomains())
        except libvirt.libvirtError as exc:
            raise KioskError(f"Cannot list guests: {exc}") from exc
    guests, missing = [], []
    for name in wanted:
        info = guest_info(conn, name, leases_dir)
        if info is None:
            missing.append(name)
        else:
            guests.append(info)
    return {"guests": guests, "missing": missing}
