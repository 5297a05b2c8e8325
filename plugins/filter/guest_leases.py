# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: guest_leases
short_description: The bridge's static leases for a kiosk's guests
version_added: 0.2.0
description:
  - For each entry of a guest list (the guest role's C(kiosk_guests)) that asks for an address (C(network.ip)),
    a static lease C({mac, ip, name}) for M(kiosk.lxc.lxc_bridge)'s O(kiosk.lxc.lxc_bridge#module:dhcp_hosts), with
    the MAC P(kiosk.lxc.guest_mac#filter) gives C(<kiosk>/<guest>), the one kiosk.lxc.guest defines the guest with.
  - One filter over the whole list, so a play's task count does not grow with the number of guests.
positional: _input, kiosk
options:
  _input:
    description: The guest entries (dicts with C(name) and optionally C(network.ip)).
    type: list
    elements: dict
    required: true
  kiosk:
    description: The kiosk's name (the roles use C(inventory_hostname)).
    type: str
    required: true
author:
  - kiosk.lxc contributors (@kiosk-lxc)
"""

EXAMPLES = r"""
- name: The static leases of this kiosk's guests
  ansible.builtin.debug:
    msg: "{{ kiosk_guests | kiosk.lxc.guest_leases(inventory_hostname) }}"
"""

RETURN = r"""
_value:
  description: One lease per guest with an address, in the list's order.
  type: list
  elements: dict
  sample: [{mac: "52:54:00:3e:91:07", ip: 10.0.3.10, name: player1}]
"""

from ansible_collections.kiosk.lxc.plugins.module_utils.guest import spec


def guest_leases(guests, kiosk):
    leases = []
    for guest in guests or []:
        ip = ((guest or {}).get("network") or {}).get("ip")
        if ip is not None:
            leases.append({"mac": spec.guest_mac(f"{kiosk}/{guest['name']}"), "ip": ip, "name": guest["name"]})
    return leases


class FilterModule:
    def filters(self):
        return {"guest_leases": guest_leases}
