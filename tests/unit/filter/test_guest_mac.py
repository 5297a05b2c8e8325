"""The guest_mac filter: the bridge's static lease and the guest's MAC must agree on every run."""

from __future__ import annotations

import re

from ansible_collections.kiosk.lxc.plugins.filter.guest_mac import FilterModule, guest_mac


def test_stable_libvirt_prefixed_unicast_mac():
    mac = guest_mac("kiosk-lobby-01/player1")
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", mac)
    assert guest_mac("kiosk-lobby-01/player1") == mac
    assert FilterModule().filters()["guest_mac"]("kiosk-lobby-01/player1") == mac


def test_different_guests_and_kiosks_get_different_macs():
    macs = {guest_mac(f"kiosk-{k}/player{g}") for k in range(20) for g in range(5)}
    assert len(macs) == 100
