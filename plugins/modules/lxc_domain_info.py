#!/usr/bin/python
# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: lxc_domain_info
short_description: Facts about libvirt LXC guests, with their leased IPs
version_added: 0.1.0
description:
  - Reports all guests on O(uri), or the named ones, with their state, autostart, UUID, memory, mounts and
    interfaces.
  - An interface on a bridge gets the IPs of its MAC from the dnsmasq lease file
    C(<leases_dir>/<bridge>.leases) that M(kiosk.lxc.lxc_bridge) keeps; one on a libvirt network gets them from that
    network's DHCP leases.
extends_documentation_fragment:
  - kiosk.lxc.libvirt
  - ansible.builtin.action_common_attributes
  - kiosk.lxc.attributes.no_diff
options:
  names:
    description: Guests to report; all guests when omitted. A name that is not defined is listed in RV(missing).
    type: list
    elements: str
    aliases: [name]
  leases_dir:
    description: Directory of the per-bridge dnsmasq lease files.
    type: path
    default: /var/lib/kiosk-lxc
author:
  - kiosk.lxc contributors (@kiosk-lxc)
"""

EXAMPLES = r"""
- name: Where is player1?
  kiosk.lxc.lxc_domain_info:
    names: [player1]
  register: kiosk_guests

- name: Show its first address
  ansible.builtin.debug:
    msg: "{{ kiosk_guests.guests[0].interfaces[0].ips | first | default('no lease yet') }}"
"""

RETURN = r"""
guests:
  description: One entry per guest, sorted by name when all are listed.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Guest name.
      type: str
    state:
      description: V(running), V(stopped), V(paused), ...
      type: str
    autostart:
      description: Whether libvirtd starts the guest when it starts.
      type: bool
    uuid:
      description: The guest's UUID.
      type: str
    persistent:
      description: Whether the guest has a stored definition.
      type: bool
    memory:
      description: Memory limit in the form the O(kiosk.lxc.lxc_domain#module:memory) option takes, such as V(512MiB).
      type: str
    memory_kib:
      description: Memory limit in KiB.
      type: int
    vcpu:
      description: Number of virtual CPUs.
      type: int
    init:
      description: The guest's init.
      type: str
    init_args:
      description: Arguments of its init.
      type: list
      elements: str
    rootfs:
      description: Host directory mounted as the guest's root.
      type: str
    mounts:
      description: Filesystems, root first, each with type, source, target, readonly (and size for V(ram)).
      type: list
      elements: dict
    interfaces:
      description: Interfaces, each with type (V(bridge), V(network)), source, mac and ips (from leases).
      type: list
      elements: dict
    hostdevs:
      description: Host character devices passed in.
      type: list
      elements: str
    capabilities:
      description: Capability policy with the added and dropped capabilities.
      type: dict
    idmap:
      description: User namespace mapping (uid, gid).
      type: dict
    privnet:
      description: Whether the guest has a private network namespace.
      type: bool
    metadata:
      description: The key/values set with the O(kiosk.lxc.lxc_domain#module:metadata) option.
      type: dict
    restart_pending:
      description: Whether the running guest runs an older definition than the stored one.
      type: bool
missing:
  description: Names asked for that are not defined.
  returned: always
  type: list
  elements: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.kiosk.lxc.plugins.module_utils.common import text, virt
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import info, manage


def main():
    module = AnsibleModule(
        argument_spec={
            **virt.ARGUMENT_SPEC,
            "names": {"type": "list", "elements": "str", "aliases": ["name"]},
            "leases_dir": {"type": "path", "default": info.DEFAULT_LEASES_DIR},
        },
        supports_check_mode=True,
    )
    for lib, err in manage.missing_libs():
        module.fail_json(msg=missing_required_lib(lib), exception=err)
    try:
        text.check_params(module.params)  # every string may reach a file, a command or XML
        with virt.connection(module.params["uri"]) as conn:
            result = info.gather(conn, module.params["names"], module.params["leases_dir"])
    except KioskError as exc:
        module.fail_json(msg=exc.msg, exception=traceback.format_exc(), **exc.details)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
