# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: guest_mac
short_description: A stable MAC address for a guest, from its kiosk and its name
version_added: 0.1.0
description:
  - Returns a locally administered unicast MAC in libvirt's C(52:54:00) prefix, derived from the input string
    (the roles use C(<kiosk>/<guest>)), so the bridge's static lease and the guest's definition agree on every run
    and every controller, without storing anything.
positional: _input
options:
  _input:
    description: Any string that names the guest uniquely, for example V(kiosk01/player1).
    type: str
    required: true
author:
  - kiosk.lxc contributors (@kiosk-lxc)
"""

EXAMPLES = r"""
- name: MAC of player1 on this kiosk
  ansible.builtin.debug:
    msg: "{{ (inventory_hostname ~ '/player1') | kiosk.lxc.guest_mac }}"
"""

RETURN = r"""
_value:
  description: The MAC address, lower case, colon separated.
  type: str
  sample: 52:54:00:3e:91:07
"""

from ansible_collections.kiosk.lxc.plugins.module_utils.guest import spec


def guest_mac(value):
    # The one derivation: kiosk.lxc.guest gives each guest this MAC in Python.
    return spec.guest_mac(str(value))


class FilterModule:
    def filters(self):
        return {"guest_mac": guest_mac}
