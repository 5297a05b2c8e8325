"""lxc_bridge input validation and defaults (plain pytest, no Ansible, no root)."""

from __future__ import annotations

import ipaddress

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.bridge.netlink import Link
from ansible_collections.kiosk.lxc.plugins.module_utils.bridge.spec import build_spec, check_host, default_range
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

IP = ipaddress.IPv4Address


def test_defaults_are_the_issue_interface():
    spec = build_spec({})
    assert spec.name == "lxcbr0"
    assert str(spec.interface) == "10.0.3.1/24"
    assert spec.dhcp_range == (IP("10.0.3.2"), IP("10.0.3.254"))
    assert (spec.nat, spec.dnsmasq, spec.persistent, spec.firewall) == (True, True, True, "auto")
    assert spec.conf_path == "/etc/kiosk-lxc/dnsmasq-lxcbr0.conf"
    assert spec.leases_path == "/var/lib/kiosk-lxc/lxcbr0.leases"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.0.3.1/24", ("10.0.3.2", "10.0.3.254")),
        ("10.0.3.254/24", ("10.0.3.1", "10.0.3.253")),
        ("10.0.3.100/24", ("10.0.3.101", "10.0.3.254")),
        ("10.0.3.200/24", ("10.0.3.1", "10.0.3.199")),
        ("192.168.9.1/30", ("192.168.9.2", "192.168.9.2")),
    ],
)
def test_default_range_is_the_subnet_less_the_bridge_address(address, expected):
    assert default_range(ipaddress.IPv4Interface(address)) == tuple(IP(x) for x in expected)


def test_static_leases_are_normalised():
    spec = build_spec({"dhcp_hosts": [{"mac": "52-54-00-AA-00-10", "ip": "10.0.3.10", "name": "player1"}]})
    (lease,) = spec.dhcp_hosts
    assert (lease.mac, lease.ip, lease.name) == ("52:54:00:aa:00:10", IP("10.0.3.10"), "player1")


MAC = "52:54:00:00:00:10"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"name": "a-bridge-too-long"}, "at most 15"),
        ({"name": "br 0"}, "may only hold"),
        ({"address": "10.0.3.0/24"}, "network address of 10.0.3.0/24, not an interface address"),
        ({"address": "10.0.3.255/24"}, "broadcast address"),
        ({"address": "10.0.3.1"}, "needs a prefix length"),
        ({"address": "10.0.3.1/31"}, "leaves no room"),
        ({"address": "127.0.0.2/8"}, "cannot be an interface address"),
        ({"address": "fd00::1/64"}, "not an IPv4 address"),
        ({"dhcp_range": "10.0.3.10,10.0.4.20"}, "outside the subnet 10.0.3.0/24 (10.0.4.20)"),
        ({"dhcp_range": "10.0.3.20,10.0.3.10"}, "starts after it ends"),
        ({"dhcp_range": "10.0.3.1,10.0.3.10"}, "bridge's own address"),
        ({"dhcp_range": "10.0.3.10"}, "must be two addresses"),
        ({"dhcp_hosts": [{"mac": MAC, "ip": "10.0.4.10"}]}, "dhcp_hosts[0]: ip 10.0.4.10 is outside the subnet"),
        ({"dhcp_hosts": [{"mac": MAC, "ip": "10.0.3.1"}]}, "the bridge's own address"),
        ({"dhcp_hosts": [{"mac": "52:54:00", "ip": "10.0.3.9"}]}, "is not a MAC address"),
        ({"dhcp_hosts": [{"mac": MAC, "ip": "10.0.3.9", "name": "bad_name"}]}, "is not a host name"),
        ({"dhcp_hosts": [{"mac": MAC, "ip": "10.0.3.9"}, {"mac": MAC, "ip": "10.0.3.8"}]},
         f"dhcp_hosts[1]: mac {MAC} is already used by dhcp_hosts[0]"),
        ({"dhcp_hosts": [{"mac": MAC, "ip": "10.0.3.9"}, {"mac": "52:54:00:00:00:11", "ip": "10.0.3.9"}]},
         "ip 10.0.3.9 is already used"),
        ({"dhcp_hosts": [{"mac": MAC, "ip": "10.0.3.9", "name": "p"}, {"mac": "52:54:00:00:00:11", "ip": "10.0.3.8",
          "name": "P"}]}, "name p is already used"),
        ({"firewall": "pf"}, "must be one of"),
        ({"dns_domain": "bad domain"}, "not a DNS domain name"),
    ],
)  # fmt: skip
def test_bad_input_is_one_sentence_naming_the_option(params, message):
    with pytest.raises(KioskError) as err:
        build_spec(params)
    assert message in err.value.msg
    assert err.value.msg.startswith("Bridge '") or err.value.msg.startswith("Option")


def _link(index, name, kind, *addresses):
    return Link(index, name, kind, True, [ipaddress.IPv4Interface(a) for a in addresses])


def test_host_checks_name_kind_and_overlap():
    links = {
        "lo": _link(1, "lo", None, "127.0.0.1/8"),
        "eth0": _link(2, "eth0", "veth", "10.0.0.5/16"),
        "lxcbr0": _link(3, "lxcbr0", "bridge", "10.0.3.1/24", "10.9.9.1/24"),
    }
    check_host(build_spec({"address": "10.9.9.1/24"}), links)  # its own addresses do not count
    with pytest.raises(KioskError, match=r"overlaps 10\.0\.0\.5/16 on interface 'eth0'"):
        check_host(build_spec({"address": "10.0.3.1/24"}), {**links, "lxcbr0": _link(3, "lxcbr0", "bridge")})
    with pytest.raises(KioskError, match="taken by an interface of kind 'veth'"):
        check_host(build_spec({"name": "eth0", "address": "10.1.0.1/24"}), links)
    with pytest.raises(KioskError, match="taken by an interface of kind 'veth'"):
        check_host(build_spec({"name": "eth0", "state": "absent"}), links)
