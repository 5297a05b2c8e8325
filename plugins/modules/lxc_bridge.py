#!/usr/bin/python
# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: lxc_bridge
short_description: A bridge for LXC guests with DHCP/DNS (dnsmasq) and NAT, kept in place
version_added: 0.1.0
description:
  - Creates a Linux bridge with an IPv4 address, a dnsmasq that serves DHCP and DNS on that bridge only, and
    masquerading of the bridge's subnet towards the other interfaces.
  - Idempotent in place; an existing bridge is never deleted and recreated (guests stay attached). A changed
    DHCP range or static lease restarts only the bridge's dnsmasq.
  - NAT lives in objects only this module owns, the nftables table C(inet kiosk_lxc_<name>) or the iptables
    chain C(KIOSK-LXC-<name>) in the nat table; nothing else is flushed.
  - dnsmasq keeps its leases in C(<state_dir>/<name>.leases) and its config in C(<config_dir>/dnsmasq-<name>.conf).
  - The bridge's name, and C(<name>.<dns_domain>) when O(dns_domain) is set, resolve to the bridge address.
  - With O(nat=true) the module sets C(net.ipv4.ip_forward=1); it never turns forwarding off again, also not
    with O(state=absent), since other things on the host may rely on it.
  - IPv4 only.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - kiosk.lxc.attributes
options:
  name:
    description: The bridge's interface name (at most 15 characters; letters, digits, C(_), C(.), C(-)).
    type: str
    default: lxcbr0
  address:
    description:
      - The bridge's IPv4 address with prefix length; the subnet is the guests' network.
      - Other IPv4 addresses on the bridge are removed (the module owns the bridge's IPv4 configuration).
    type: str
    default: 10.0.3.1/24
  dhcp_range:
    description: C(first,last) addresses dnsmasq leases dynamically; default is the subnet less the bridge address.
    type: str
  dhcp_hosts:
    description: Static leases; MAC, IP and name must each be unique and the IP inside the subnet.
    type: list
    elements: dict
    default: []
    suboptions:
      mac:
        description: The guest interface's MAC address.
        type: str
        required: true
      ip:
        description: The address it always gets.
        type: str
        required: true
      name:
        description: Host name for DHCP and DNS.
        type: str
  dns_domain:
    description: DNS domain of the guests; names in it are answered by dnsmasq only, never forwarded.
    type: str
  nat:
    description: Masquerade traffic from the subnet to any other destination, and enable IPv4 forwarding.
    type: bool
    default: true
  firewall:
    description: Where the NAT rule lives; C(auto) takes nftables when C(nft) is installed, else iptables.
    type: str
    choices: [auto, nftables, iptables]
    default: auto
  dnsmasq:
    description: Run dnsmasq (DHCP and DNS) on the bridge, bound to it only.
    type: bool
    default: true
  persistent:
    description:
      - Keep bridge, address, forwarding, NAT and dnsmasq across a reboot with two systemd units,
        C(kiosk-lxc-bridge-<name>.service) and C(kiosk-lxc-dnsmasq-<name>.service).
      - On a host that does not run systemd the module sets everything up for this boot only, warns, and
        returns RV(persistence=runtime). With V(false), units the module wrote earlier are removed.
    type: bool
    default: true
  state:
    description: V(absent) stops the bridge's dnsmasq, removes its rules, files and units, and deletes the bridge.
    type: str
    choices: [present, absent]
    default: present
  config_dir:
    description: Directory of the dnsmasq config and the NAT rules file.
    type: path
    default: /etc/kiosk-lxc
  state_dir:
    description: Directory of dnsmasq's lease and pid files (lxc_domain_info reads the leases here).
    type: path
    default: /var/lib/kiosk-lxc
requirements:
  - pyroute2 (C(python3-pyroute2) on Debian)
  - dnsmasq (C(dnsmasq-base)), nftables or iptables
author:
  - kiosk.lxc contributors (@kiosk-lxc)
"""

EXAMPLES = r"""
- name: Guest bridge with a static lease for player1
  kiosk.lxc.lxc_bridge:
    name: lxcbr0
    address: 10.0.3.1/24
    dhcp_hosts:
      - {mac: "52:54:00:00:00:10", ip: 10.0.3.10, name: player1}
    dns_domain: lxc

- name: Remove it again
  kiosk.lxc.lxc_bridge:
    name: lxcbr0
    state: absent
"""

RETURN = r"""
bridge:
  description: The bridge after the run (ifindex is null when it does not exist).
  returned: always
  type: dict
  sample: {name: lxcbr0, exists: true, ifindex: 7}
address:
  description: The bridge's address with prefix length.
  returned: always
  type: str
  sample: 10.0.3.1/24
firewall:
  description: The NAT backend in use (null with nat false or state absent).
  returned: always
  type: str
  sample: nftables
persistence:
  description: C(systemd) when units keep the bridge across reboots, C(runtime) when it lasts until the next boot.
  returned: always
  type: str
  sample: runtime
dnsmasq:
  description: The bridge's dnsmasq; pid is null when none runs (or in check mode when it would be restarted).
  returned: always
  type: dict
  sample: {enabled: true, pid: 4242, config: /etc/kiosk-lxc/dnsmasq-lxcbr0.conf,
           leases_file: /var/lib/kiosk-lxc/lxcbr0.leases}
leases:
  description: dnsmasq's current leases.
  returned: always
  type: list
  elements: dict
  sample: [{mac: "52:54:00:00:00:10", ip: 10.0.3.10, hostname: player1, expiry: 1764000000}]
actions:
  description: What the run changed, or would change in check mode, in order.
  returned: always
  type: list
  elements: str
  sample: ["create bridge lxcbr0", "add address 10.0.3.1/24 to lxcbr0", "start dnsmasq on lxcbr0 with ..."]
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.kiosk.lxc.plugins.module_utils.bridge.bridge import Host, ensure
from ansible_collections.kiosk.lxc.plugins.module_utils.bridge.netlink import HAS_PYROUTE2, PYROUTE2_IMPORT_ERROR
from ansible_collections.kiosk.lxc.plugins.module_utils.common import results, text
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "default": "lxcbr0"},
            "address": {"type": "str", "default": "10.0.3.1/24"},
            "dhcp_range": {"type": "str"},
            "dhcp_hosts": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "mac": {"type": "str", "required": True},
                    "ip": {"type": "str", "required": True},
                    "name": {"type": "str"},
                },
            },
            "dns_domain": {"type": "str"},
            "nat": {"type": "bool", "default": True},
            "firewall": {"type": "str", "default": "auto", "choices": ["auto", "nftables", "iptables"]},
            "dnsmasq": {"type": "bool", "default": True},
            "persistent": {"type": "bool", "default": True},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "config_dir": {"type": "path", "default": "/etc/kiosk-lxc"},
            "state_dir": {"type": "path", "default": "/var/lib/kiosk-lxc"},
        },
        supports_check_mode=True,
    )
    if not HAS_PYROUTE2:
        module.fail_json(msg=missing_required_lib("pyroute2"), exception=str(PYROUTE2_IMPORT_ERROR))

    host = Host(
        run=lambda argv, data=None: module.run_command(argv, data=data),
        which=module.get_bin_path,
    )
    params = dict(module.params)
    params["dhcp_hosts"] = [{k: v for k, v in h.items() if v is not None} for h in params["dhcp_hosts"]]
    try:
        text.check_params(module.params)  # every string may reach a file, a command or XML
        result = ensure(params, host, check=module.check_mode)
    except KioskError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    except Exception as exc:  # netlink/OS errors: one sentence, the traceback for -vvv
        module.fail_json(msg=f"Bridge '{params['name']}': {exc}", exception=traceback.format_exc())
    module.exit_json(**results.hand_over(module, result))


if __name__ == "__main__":
    main()
