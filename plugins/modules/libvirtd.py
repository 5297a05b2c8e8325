#!/usr/bin/python
# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: libvirtd
short_description: Make libvirtd's LXC driver answer, also on hosts without a service manager
version_added: 0.1.0
description:
  - Ensures libvirtd answers on O(uri). Where systemd runs, it starts C(libvirtd.service).
  - Where nothing starts services (containers, CI machines, minimal images), it starts C(virtlogd) and C(libvirtd)
    as daemons itself. On a host with the hybrid cgroup layout (cgroup v1 controllers plus a cgroup2 mount beside them),
    libvirt's LXC driver fails every guest start with C(Unable to create directory /sys/fs/cgroup/unified), so libvirtd
    is started in a private mount namespace without that one mount; nothing outside that namespace changes.
  - To enable libvirtd at boot on a systemd host, use M(ansible.builtin.systemd_service) as well.
extends_documentation_fragment:
  - kiosk.lxc.libvirt
  - ansible.builtin.action_common_attributes
  - kiosk.lxc.attributes.no_diff
options:
  state:
    description: Only V(started) is supported; stopping libvirtd is left to the service manager.
    type: str
    choices: [started]
    default: started
  timeout:
    description: Seconds to wait for libvirtd to answer after starting it.
    type: int
    default: 30
author:
  - kiosk.lxc contributors (@kiosk-lxc)
"""

EXAMPLES = r"""
- name: Make sure libvirtd answers
  kiosk.lxc.libvirtd:
    state: started
"""

RETURN = r"""
actions:
  description: The commands that started libvirtd, or would have in check mode.
  returned: always
  type: list
  elements: str
  sample: ["virtlogd -d", "unshare -m --propagation private sh -c 'umount /sys/fs/cgroup/unified && exec libvirtd -d'"]
how:
  description: V(already running), V(systemd), V(daemon) or V(private mount namespace).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.kiosk.lxc.plugins.module_utils.common import text, virt
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.host.libvirtd import ensure_started


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **virt.ARGUMENT_SPEC,
            state=dict(type="str", default="started", choices=["started"]),
            timeout=dict(type="int", default=30),
        ),
        supports_check_mode=True,
    )
    if virt.libvirt is None:
        module.fail_json(msg=missing_required_lib("libvirt-python"), exception=str(virt.LIBVIRT_IMPORT_ERROR))

    def answers(uri):
        try:
            virt.connect(uri).close()
        except KioskError:
            return False
        return True

    def run(argv):
        rc, out, err = module.run_command(argv)
        if rc != 0:
            raise KioskError(f"Starting libvirtd failed: {' '.join(argv)}: {(err or out).strip()}")

    try:
        text.check_params(module.params)  # every string may reach a file, a command or XML
        result = ensure_started(module.params["uri"], module.params["timeout"], module.check_mode, answers, run)
    except KioskError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
