"""kiosk.lxc.guest's lease wait: each running guest's addresses from its bridge's dnsmasq lease file.

The plans are built by hand (the part that reads libvirt is the integration tests'); the lease files
are real files in dnsmasq's format, in a directory of the test's own.
"""

from __future__ import annotations

import time

from ansible_collections.kiosk.lxc.plugins.module_utils.guest import reconcile


def settings(tmp_path, wait: float = 0) -> reconcile.Settings:
    return reconcile.Settings(
        kiosk="k1", defaults={}, bases={}, base_packages=[], leases_dir=str(tmp_path), network_wait=wait
    )


def plan(name: str, mac: str, bridge: str = "br0", state: str = "running") -> reconcile.Plan:
    return reconcile.Plan(name=name, where="guests[0]", state=state, interfaces=[(bridge, mac)])


def test_addresses_come_from_each_guests_mac_on_its_bridge(tmp_path):
    future = int(time.time()) + 3600
    (tmp_path / "br0.leases").write_text(
        f"{future} 52:54:00:AA:00:01 10.0.3.10 p1 *\n"
        f"{future} 52:54:00:aa:00:02 10.0.3.11 p2 *\n"
        f"{int(time.time()) - 10} 52:54:00:aa:00:03 10.0.3.12 p3 *\n"  # expired
    )
    (tmp_path / "br1.leases").write_text("0 52:54:00:aa:00:04 10.0.4.10 p4 *\n")  # 0: never expires
    plans = [
        plan("p1", "52:54:00:aa:00:01"),
        plan("p2", "52:54:00:AA:00:02"),
        plan("p3", "52:54:00:aa:00:03"),
        plan("p4", "52:54:00:aa:00:04", bridge="br1"),
        plan("p5", "52:54:00:aa:00:01", state="stopped"),  # a stopped guest is not asked for one
    ]
    reconcile.wait_for_leases(plans, settings(tmp_path), wait=False)
    assert [p.addresses for p in plans] == [["10.0.3.10"], ["10.0.3.11"], [], ["10.0.4.10"], []]
    assert [p.error for p in plans] == [None] * 5


def test_a_guest_without_a_lease_by_the_deadline_is_named(tmp_path):
    (tmp_path / "br0.leases").write_text("0 52:54:00:aa:00:01 10.0.3.10 p1 *\n")
    plans = [plan("p1", "52:54:00:aa:00:01"), plan("p2", "52:54:00:aa:00:02")]
    reconcile.wait_for_leases(plans, settings(tmp_path, wait=1), wait=True)
    assert plans[0].addresses == ["10.0.3.10"] and plans[0].error is None
    assert plans[1].error == f"Guest 'p2': no DHCP lease within 1 s (its bridge's leases are in {tmp_path})"
