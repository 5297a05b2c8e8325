#!/usr/bin/python
# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: lxc_bridge_info
short_description: Read a guest bridge made by kiosk.lxc.lxc_bridge - link, NAT, dnsmasq and leases
version_added: 0.1.0
description:
  - Reports the bridge's link state and IPv4 addresses (netlink), which NAT backends hold the module's rules,
    whether the bridge's dnsmasq runs, and dnsmasq's current leases. Changes nothing.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - kiosk.lxc.attributes.no_diff
options:
  name:
    description: The bridge's interface name.
    type: str
    default: lxcbr0
  config_dir:
    description: Directory of the dnsmasq config, as given to kiosk.lxc.lxc_bridge.
    type: path
    default: /etc/kiosk-lxc
  state_dir:
    description: Directory of dnsmasq's lease and pid files, as given to kiosk.lxc.lxc_bridge.
    type: path
    default: /var/lib/kiosk-lxc
requirements:
  - pyroute2 (C(python3-pyroute2) on Debian)
author:
  - kiosk.lxc contributors (@kiosk-lxc)
"""

EXAMPLES = r"""
- name: Which guests hold a lease on lxcbr0
  kiosk.lxc.lxc_bridge_info:
    name: lxcbr0
  register: br

- name: Show them
  ansible.builtin.debug:
    msg: "{{ br.leases | map(attribute='ip') | list }}"
"""

RETURN = r"""
bridge:
  description: The interface; is_bridge is false when the name belongs to another kind of interface.
  returned: always
  type: dict
  sample: {name: lxcbr0, exists: true, is_bridge: true, ifindex: 7, up: true, addresses: [10.0.3.1/24]}
firewall:
  description: NAT backends holding the module's rules for this bridge.
  returned: always
  type: list
  elements: str
  sample: [nftables]
dnsmasq:
  description: The bridge's dnsmasq (config is null when the file does not exist).
  returned: always
  type: dict
  sample: {running: true, pid: 4242, config: /etc/kiosk-lxc/dnsmasq-lxcbr0.conf,
           leases_file: /var/lib/kiosk-lxc/lxcbr0.leases}
leases:
  description: dnsmasq's current leases.
  returned: always
  type: list
  elements: dict
  sample: [{mac: "52:54:00:00:00:10", ip: 10.0.3.10, hostname: player1, expiry: 1764000000}]
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.kiosk.lxc.plugins.module_utils.bridge.bridge import Host, info
from ansible_collections.kiosk.lxc.plugins.module_utils.bridge.netlink import HAS_PYROUTE2, PYROUTE2_IMPORT_ERROR
from ansible_collections.kiosk.lxc.plugins.module_utils.common import text
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError


def main():
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "default": "lxcbr0"},
            "config_dir": {"type": "path", "default": "/etc/kiosk-lxc"},
            "state_dir": {"type": "path", "default": "/var/lib/kiosk-lxc"},
        },
        supports_check_mode=True,
    )
    if not HAS_PYROUTE2:
        module.fail_json(msg=missing_required_lib("pyroute2"), exception=str(PYROUTE2_IMPORT_ERROR))
    host = Host(run=lambda argv, data=None: module.run_command(argv, data=data), which=module.get_bin_path)
    try:
        text.check_params(module.params)  # every string may reach a file, a command or XML
        result = info(dict(module.params), host)
    except KioskError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    except Exception as exc:  # netlink/OS errors: one sentence, the traceback for -vvv
        module.fail_json(msg=f"Bridge '{module.params['name']}': {exc}", exception=traceback.format_exc())
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
