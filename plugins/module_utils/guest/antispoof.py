# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A guest's interface may only send as itself: libvirt's nwfilter on its bridge port.

Root in a guest has CAP_NET_RAW (and CAP_NET_ADMIN in its own network
namespace): with nothing on the bridge it can send frames with another
guest's MAC and ARP replies that claim another guest's address, and the
bridge, the host and the other guests believe it. The inventory plugin
finds a guest by its MAC's lease, so Ansible would then talk to the
impostor.

The guest module puts one `<filterref>` on the guest's interface (the one
with the guest's MAC); libvirt's nwfilter driver turns it into ebtables rules
on the guest's port when the interface is made, before the guest runs, and
removes them with the interface. Being part of the definition, it holds
across guest restarts, libvirtd restarts and host reboots with no Ansible
run, and goes when the guest is undefined.

- A guest with a static lease (`network.ip`) gets `clean-traffic` with that
  address: frames only from its MAC, IPv4 only from its address (DHCP from
  0.0.0.0 aside), ARP only for its MAC and address, no other layer 2
  protocol (IPv6 included).
- A guest without one gets `no-mac-spoofing`: frames only from its own MAC.
  Its address is dnsmasq's choice and is not known here, so it can still
  answer ARP for another guest's address with its own MAC; give guests a
  `network.ip` to close that (docs/least-privilege.md).

Plain Python, no ansible imports.
"""

from __future__ import annotations

import hashlib
import ipaddress

from ansible_collections.kiosk.lxc.plugins.module_utils.domain.xmldef import etree

STATIC = "clean-traffic"
MAC_ONLY = "no-mac-spoofing"
FILTERS = (STATIC, MAC_ONLY)


PORT_PREFIX = "kg"


def port_name(kiosk_guest: str) -> str:
    """The host end of the guest's interface, fixed per `<kiosk>/<guest>` (14 characters, IFNAMSIZ allows 15).

    libvirt 9.0's LXC driver instantiates a filter before it names a port of its own choosing, and
    then fails the start ("filter binding has no port dev name"): the port is named here.
    """
    return PORT_PREFIX + hashlib.sha256(str(kiosk_guest).encode("utf-8")).hexdigest()[:12]


def wanted(ip: str | None) -> tuple[str, dict]:
    """(the nwfilter, its parameters) for a guest with this static address (None: none)."""
    if ip is None:
        return MAC_ONLY, {}
    return STATIC, {"IP": str(ipaddress.IPv4Address(ip))}


def make_mutate(mac: str, ip: str | None, port: str):
    """A mutator that gives the interface with `mac` the host port name `port` and exactly the filterref wanted(ip)."""
    name, params = wanted(ip)

    def mutate(root) -> None:
        for iface in root.iterfind("devices/interface"):
            el = iface.find("mac")
            if el is None or (el.get("address") or "").lower() != mac:
                continue
            for old in iface.findall("target") + iface.findall("filterref"):
                iface.remove(old)
            src = iface.find("source")
            target = etree.Element("target", dev=port)
            if src is not None:
                src.addnext(target)
            else:
                iface.append(target)
            ref = etree.SubElement(iface, "filterref", filter=name)
            for key, value in sorted(params.items()):
                etree.SubElement(ref, "parameter", name=key, value=value)

    return mutate


def _interface(root, mac: str):
    for iface in root.iterfind("devices/interface"):
        el = iface.find("mac")
        if el is not None and (el.get("address") or "").lower() == mac:
            return iface
    return None


def remove_mutate(mac: str):
    """A mutator that takes the filterref off the interface with `mac` (network.antispoof: false)."""

    def mutate(root) -> None:
        iface = _interface(root, mac)
        if iface is not None:
            for old in iface.findall("filterref"):
                iface.remove(old)

    return mutate


def has_filter(xml: str, mac: str) -> bool:
    """Whether the stored definition's interface with `mac` has a filterref."""
    iface = _interface(etree.fromstring(xml.encode("utf-8")), mac)
    return iface is not None and iface.find("filterref") is not None


def describe(iface) -> dict | None:
    """{filter, parameters} of an interface element's filterref, or None."""
    ref = iface.find("filterref")
    if ref is None:
        return None
    return {"filter": ref.get("filter"), "parameters": {p.get("name"): p.get("value") for p in ref.iter("parameter")}}
