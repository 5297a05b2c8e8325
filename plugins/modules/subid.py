#!/usr/bin/python
# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: subid
short_description: A subordinate uid/gid range per guest in /etc/subuid and /etc/subgid
version_added: 0.1.0
description:
  - Reserves a range of subordinate ids for O(name) (a guest), the same range in C(/etc/subuid) and
    C(/etc/subgid), so the guest's user namespace (M(kiosk.lxc.lxc_domain) O(kiosk.lxc.lxc_domain#module:idmap))
    and its root filesystem (M(kiosk.lxc.rootfs) O(kiosk.lxc.rootfs#module:idmap)) use ids no one else has.
  - An owner keeps the range it has. A new one gets O(start), or the lowest free range at or above 100000 that
    overlaps no entry of either file; another owner's range is never reused.
  - Both files are rewritten atomically under a lock, so concurrent runs cannot pick the same range.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - kiosk.lxc.attributes
options:
  name:
    description: The owner of the range, usually the guest's name.
    type: str
    required: true
  count:
    description: How many ids.
    type: int
    default: 65536
  start:
    description: The first id; by default the owner's current range, else the lowest free one.
    type: int
  state:
    description: V(absent) releases the owner's ranges.
    type: str
    choices: [present, absent]
    default: present
author:
  - kiosk.lxc contributors (@kiosk-lxc)
"""

EXAMPLES = r"""
- name: Ids for guest player1
  kiosk.lxc.subid:
    name: player1
  register: ids

- name: Its user namespace
  kiosk.lxc.lxc_domain:
    name: player1
    idmap:
      uid: {start: 0, target: "{{ ids.start }}", count: "{{ ids.count }}"}
      gid: {start: 0, target: "{{ ids.start }}", count: "{{ ids.count }}"}
"""

RETURN = r"""
start:
  description: The first id of the range (the same for uids and gids); null with O(state=absent).
  returned: always
  type: int
  sample: 100000
count:
  description: How many ids; null with O(state=absent).
  returned: always
  type: int
  sample: 65536
actions:
  description: What ran, or would run in check mode.
  returned: always
  type: list
  elements: str
  sample: [write /etc/subuid, write /etc/subgid]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.kiosk.lxc.plugins.module_utils.common import results, text
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.subid import ranges


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            count=dict(type="int", default=ranges.DEFAULT_COUNT),
            start=dict(type="int"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        ),
        supports_check_mode=True,
    )
    try:
        text.check_params(module.params)  # every string may reach a file, a command or XML
        result = ranges.ensure(module.params, check_mode=module.check_mode)
    except KioskError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    module.exit_json(**results.hand_over(module, result))


if __name__ == "__main__":
    main()
