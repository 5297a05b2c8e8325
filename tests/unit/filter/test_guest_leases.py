"""The guest_leases filter: one static lease per guest that asks for an address, with the guest's own MAC."""

from __future__ import annotations

from ansible_collections.kiosk.lxc.plugins.filter.guest_leases import FilterModule
from ansible_collections.kiosk.lxc.plugins.filter.guest_mac import guest_mac


def test_a_lease_per_guest_with_an_address_and_the_mac_the_guest_gets():
    guests = [
        {"name": "p1", "network": {"ip": "10.0.3.10"}},
        {"name": "p2"},
        {"name": "p3", "network": {"bridge": "br1"}},
        {"name": "p4", "network": {"ip": None}},
        {"name": "p5", "network": {"bridge": "br1", "ip": "10.0.3.15"}},
    ]
    leases = FilterModule().filters()["guest_leases"](guests, "kiosk-7")
    assert leases == [
        {"mac": guest_mac("kiosk-7/p1"), "ip": "10.0.3.10", "name": "p1"},
        {"mac": guest_mac("kiosk-7/p5"), "ip": "10.0.3.15", "name": "p5"},
    ]
    assert FilterModule().filters()["guest_leases"]([], "kiosk-7") == []
