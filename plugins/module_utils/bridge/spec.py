# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""lxc_bridge: the desired state from the module's parameters, validated.

Plain Python (stdlib only). `build_spec(params)` checks everything that needs no
knowledge of the host; `check_host(spec, links)` checks the rest against the
interfaces the host has (name taken by a non-bridge, overlapping subnets).
Both raise KioskError before anything is changed.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

from ansible_collections.kiosk.lxc.plugins.module_utils.common import text
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

IFNAMSIZ = 15  # the kernel's limit for an interface name (16 bytes with the NUL)
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
DOMAIN_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
FIREWALLS = ("auto", "nftables", "iptables")

DEFAULT_CONFIG_DIR = "/etc/kiosk-lxc"
DEFAULT_STATE_DIR = "/var/lib/kiosk-lxc"


@dataclass(frozen=True)
class StaticLease:
    mac: str
    ip: ipaddress.IPv4Address
    name: str | None = None


@dataclass(frozen=True)
class BridgeSpec:
    name: str
    state: str = "present"
    interface: ipaddress.IPv4Interface | None = None
    dhcp_range: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address] | None = None
    dhcp_hosts: tuple[StaticLease, ...] = ()
    dns_domain: str | None = None
    nat: bool = True
    firewall: str = "auto"
    dnsmasq: bool = True
    persistent: bool = True
    config_dir: str = DEFAULT_CONFIG_DIR
    state_dir: str = DEFAULT_STATE_DIR

    @property
    def network(self) -> ipaddress.IPv4Network:
        return self.interface.network

    @property
    def conf_path(self) -> str:
        return os.path.join(self.config_dir, f"dnsmasq-{self.name}.conf")

    @property
    def leases_path(self) -> str:
        return os.path.join(self.state_dir, f"{self.name}.leases")

    @property
    def pid_path(self) -> str:
        return os.path.join(self.state_dir, f"dnsmasq-{self.name}.pid")


def _fail(msg: str, **details):
    raise KioskError(msg, **details)


def _name(value) -> str:
    name = str(value or "")
    if not name:
        _fail("Option 'name' must not be empty")
    if len(name) > IFNAMSIZ:
        _fail(f"Bridge {text.quote(name)}: name is {len(name)} characters long, Linux allows at most {IFNAMSIZ}")
    if not NAME_RE.fullmatch(name):
        _fail(
            f"Bridge {text.quote(name)}: name may only hold letters, digits, '_', '.' and '-',"
            " starting with a letter or digit"
        )
    return name


def _interface(name: str, value: str) -> ipaddress.IPv4Interface:
    text = str(value)
    if "/" not in text:
        _fail(f"Bridge '{name}': address '{text}' needs a prefix length, e.g. 10.0.3.1/24")
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError:
        _fail(f"Bridge '{name}': address '{text}' is not an IPv4 address with a prefix length")
    net = iface.network
    if net.prefixlen > 30:
        _fail(f"Bridge '{name}': address '{text}' leaves no room for guests (prefix /{net.prefixlen}, at most /30)")
    if iface.ip in (net.network_address, net.broadcast_address):
        what = "network" if iface.ip == net.network_address else "broadcast"
        _fail(f"Bridge '{name}': address '{text}' is the {what} address of {net}, not an interface address")
    if iface.ip.is_loopback or iface.ip.is_multicast or iface.ip.is_unspecified or iface.ip.is_reserved:
        _fail(f"Bridge '{name}': address '{text}' cannot be an interface address")
    return iface


def default_range(iface: ipaddress.IPv4Interface) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """The subnet's host addresses less the bridge's: the larger side of it."""
    net = iface.network
    first, last = net.network_address + 1, net.broadcast_address - 1
    below = (first, iface.ip - 1) if iface.ip > first else None
    above = (iface.ip + 1, last) if iface.ip < last else None
    if below is None:
        return above
    if above is None:
        return below
    return above if int(above[1]) - int(above[0]) >= int(below[1]) - int(below[0]) else below


def _range(name: str, iface, value) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    if value in (None, ""):
        return default_range(iface)
    parts = [p.strip() for p in str(value).split(",")]
    if len(parts) != 2:
        _fail(f"Bridge '{name}': dhcp_range '{value}' must be two addresses, 'first,last'")
    try:
        start, end = (ipaddress.IPv4Address(p) for p in parts)
    except ValueError:
        _fail(f"Bridge '{name}': dhcp_range '{value}' must be two IPv4 addresses, 'first,last'")
    net = iface.network
    hosts = (net.network_address + 1, net.broadcast_address - 1)
    for addr in (start, end):
        if not hosts[0] <= addr <= hosts[1]:
            _fail(f"Bridge '{name}': dhcp_range '{value}' is outside the subnet {net} ({addr})")
    if start > end:
        _fail(f"Bridge '{name}': dhcp_range '{value}' starts after it ends")
    if start <= iface.ip <= end:
        _fail(f"Bridge '{name}': dhcp_range '{value}' holds the bridge's own address {iface.ip}")
    return start, end


def _hosts(name: str, iface, value) -> tuple[StaticLease, ...]:
    leases, seen = [], {}
    for i, entry in enumerate(value or []):
        where = f"Bridge '{name}': dhcp_hosts[{i}]"
        if not isinstance(entry, dict):
            _fail(f"{where} must be a mapping with 'mac' and 'ip'")
        unknown = set(entry) - {"mac", "ip", "name"}
        if unknown:
            _fail(f"{where} has unknown keys {', '.join(sorted(unknown))} (allowed: mac, ip, name)")
        mac = str(entry.get("mac") or "").lower().replace("-", ":")
        if not MAC_RE.fullmatch(mac):
            _fail(f"{where}: mac {text.quote(entry.get('mac'))} is not a MAC address like 52:54:00:00:00:10")
        try:
            ip = ipaddress.IPv4Address(str(entry.get("ip") or ""))
        except ValueError:
            _fail(f"{where}: ip '{entry.get('ip')}' is not an IPv4 address")
        net = iface.network
        if ip not in net or ip in (net.network_address, net.broadcast_address):
            _fail(f"{where}: ip {ip} is outside the subnet {net}")
        if ip == iface.ip:
            _fail(f"{where}: ip {ip} is the bridge's own address")
        host = entry.get("name")
        if host is not None:
            host = str(host)
            if not HOSTNAME_RE.fullmatch(host):
                _fail(f"{where}: name {text.quote(host)} is not a host name (letters, digits and '-')")
        for key, val in (("mac", mac), ("ip", str(ip)), ("name", host and host.lower())):
            if val is None:
                continue
            if (key, val) in seen:
                _fail(f"{where}: {key} {val} is already used by dhcp_hosts[{seen[(key, val)]}]")
            seen[(key, val)] = i
        leases.append(StaticLease(mac=mac, ip=ip, name=host))
    return tuple(leases)


def build_spec(params: dict) -> BridgeSpec:
    """The validated desired state; raises KioskError on the first bad option."""
    name = _name(params.get("name", "lxcbr0"))
    state = params.get("state") or "present"
    common = {
        "name": name,
        "state": state,
        "config_dir": params.get("config_dir") or DEFAULT_CONFIG_DIR,
        "state_dir": params.get("state_dir") or DEFAULT_STATE_DIR,
        "persistent": bool(params.get("persistent", True)),
    }
    if state == "absent":
        return BridgeSpec(**common)
    iface = _interface(name, params.get("address") or "10.0.3.1/24")
    firewall = params.get("firewall") or "auto"
    if firewall not in FIREWALLS:
        _fail(f"Bridge '{name}': firewall '{firewall}' must be one of {', '.join(FIREWALLS)}")
    domain = params.get("dns_domain") or None
    if domain is not None and not DOMAIN_RE.fullmatch(domain):
        _fail(f"Bridge '{name}': dns_domain {text.quote(domain)} is not a DNS domain name")
    return BridgeSpec(
        interface=iface,
        dhcp_range=_range(name, iface, params.get("dhcp_range")),
        dhcp_hosts=_hosts(name, iface, params.get("dhcp_hosts")),
        dns_domain=domain,
        nat=bool(params.get("nat", True)),
        firewall=firewall,
        dnsmasq=bool(params.get("dnsmasq", True)),
        **common,
    )


def check_host(spec: BridgeSpec, links: dict) -> None:
    """Checks that need the host's interfaces: `links` maps name -> Link (see netlink.py)."""
    link = links.get(spec.name)
    if link is not None and link.kind != "bridge":
        _fail(
            f"Bridge '{spec.name}': the name is taken by an interface of kind '{link.kind or 'unknown'}', not a bridge",
            kind=link.kind,
        )
    if spec.state != "present":
        return
    for other in links.values():
        if other.name == spec.name:
            continue
        for addr in other.addresses:
            if addr.network.overlaps(spec.network):
                _fail(
                    f"Bridge '{spec.name}': subnet {spec.network} overlaps {addr.with_prefixlen}"
                    f" on interface '{other.name}'",
                    interface=other.name,
                )
