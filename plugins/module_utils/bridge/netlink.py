# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""lxc_bridge: links and IPv4 addresses through netlink (pyroute2).

Only calls present in pyroute2 0.7.x (Debian 12's python3-pyroute2) and later:
IPRoute.get_links/get_addr/link/addr with keyword arguments.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

try:
    from pyroute2 import IPRoute

    HAS_PYROUTE2 = True
    PYROUTE2_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the host
    IPRoute = None
    HAS_PYROUTE2 = False
    PYROUTE2_IMPORT_ERROR = exc

IFF_UP = 0x1


@dataclass
class Link:
    index: int
    name: str
    kind: str | None
    up: bool
    addresses: list = field(default_factory=list)  # ipaddress.IPv4Interface


def _attr(msg, name):
    return msg.get_attr(name)


def read_links(ipr) -> dict[str, Link]:
    """Every link with its IPv4 addresses, by name."""
    links: dict[str, Link] = {}
    by_index: dict[int, Link] = {}
    for msg in list(ipr.get_links()):
        info = _attr(msg, "IFLA_LINKINFO")
        kind = _attr(info, "IFLA_INFO_KIND") if info is not None else None
        link = Link(
            index=msg["index"],
            name=_attr(msg, "IFLA_IFNAME"),
            kind=kind,
            up=bool(msg["flags"] & IFF_UP),
        )
        links[link.name] = link
        by_index[link.index] = link
    for msg in list(ipr.get_addr(family=socket.AF_INET)):
        link = by_index.get(msg["index"])
        addr = _attr(msg, "IFA_LOCAL") or _attr(msg, "IFA_ADDRESS")
        if link is not None and addr:
            link.addresses.append(ipaddress.IPv4Interface(f"{addr}/{msg['prefixlen']}"))
    return links


def add_bridge(ipr, name: str) -> None:
    ipr.link("add", ifname=name, kind="bridge")


def index_of(ipr, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    return found[0]


def set_up(ipr, name: str) -> None:
    ipr.link("set", index=index_of(ipr, name), state="up")


def add_address(ipr, name: str, iface: ipaddress.IPv4Interface) -> None:
    ipr.addr(
        "add",
        index=index_of(ipr, name),
        address=str(iface.ip),
        prefixlen=iface.network.prefixlen,
        broadcast=str(iface.network.broadcast_address),
    )


def del_address(ipr, name: str, iface: ipaddress.IPv4Interface) -> None:
    ipr.addr("del", index=index_of(ipr, name), address=str(iface.ip), prefixlen=iface.network.prefixlen)


def del_link(ipr, name: str) -> None:
    ipr.link("del", index=index_of(ipr, name))


def open_netlink():
    return IPRoute()
