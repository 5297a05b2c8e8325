#!/usr/bin/python
# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: cgroup_device
short_description: Let a running LXC guest open host devices, through its device cgroup
version_added: 0.1.0
description:
  - A bind-mounted C(/dev/snd) is visible in a guest but its device cgroup still denies C(open()) with EPERM.
    This module adds (or removes) device cgroup rules for a libvirt LXC guest, a systemd machine or a raw cgroup.
  - B(cgroup v1) (also hybrid hosts) - reads C(devices.list) and writes only the rules it does not already cover
    to C(devices.allow); O(state=absent) writes exactly the given rules to C(devices.deny) (a wider rule such as
    C(c 116:* rwm) stays, with a warning).
  - B(cgroup v2), libvirt guest or raw cgroup - adds entries to the BPF map of the device program libvirt attached to
    the guest's cgroup (key C((major<<32)|minor), value C((access<<16)|type)). It never attaches a program of its own,
    which would run beside or replace libvirt's. libvirt's C(<hostdev mode='capabilities' type='misc'>) was not used
    because it needs one device node per entry, cannot say C(116:*), and changes the domain definition. The module
    refuses to fill the map's last free slots, since libvirt grows the map only by its own count.
  - B(cgroup v2), systemd machine (O(machine)) - C(systemctl set-property --runtime <scope> DeviceAllow=...).
  - With O(persistent=true) (the default for O(domain)) the rules are also kept in the guest's C(<metadata>)
    (namespace C(http://kiosk.lxc/xmlns/devices/1), nothing else in the definition changes), and the libvirt hook
    C(/etc/libvirt/hooks/lxc.d/50-kiosk-cgroup-device) is installed to apply them every time the guest starts.
    The hook never calls libvirtd and never fails a start; what it skips is logged to
    C(/var/log/libvirt/kiosk-cgroup-device.log).
    Its code is the part of this collection's C(module_utils) it imports (computed from its entry point), in a
    directory of its own, C(/usr/local/lib/kiosk-lxc/hook-<digest>) (the first 16 hex digits of the sha256 of its
    files), which the hook script names; a new version is renamed into place before the script is switched to it,
    then the old directory is removed. The M(kiosk.lxc.hotplug_agent)'s files are never touched, so it is not
    restarted. The library both shared before, C(/usr/local/lib/kiosk-lxc/python), is removed once neither the hook
    script nor the agent's start script names it.
    libvirtd is reloaded (SIGHUP) when the hook is installed the first time, so that it runs it.
  - Majors may be given by their C(/proc/devices) name (C(alsa), C(drm), C(input)); they are resolved on the host.
  - Must run on the host of the guest.
extends_documentation_fragment:
  - kiosk.lxc.libvirt
  - ansible.builtin.action_common_attributes
  - kiosk.lxc.attributes
options:
  domain:
    description: Name of a libvirt LXC guest on O(uri).
    type: str
  machine:
    description: Name of a systemd-machined machine (for example a C(systemd-nspawn) container).
    type: str
  cgroup:
    description: A cgroup path inside the hierarchy, for example C(/machine/lxc-1234-player1.libvirt-lxc).
    type: str
  rules:
    description:
      - Device rules, each a C(devices.allow) string C(TYPE MAJOR:MINOR ACCESS) such as C(c 116:* rw), or a dict.
      - TYPE is C(c) or C(b); MAJOR a number, C(*) or a C(/proc/devices) name; MINOR a number or C(*);
        ACCESS letters from C(r), C(w), C(m).
      - Required unless O(state=hook).
    type: list
    elements: raw
  state:
    description:
      - V(present) allows the rules, V(absent) denies exactly them.
      - V(hook) only installs (or updates) the libvirt hook that applies stored rules at every guest start, with
        no target and no O(rules); the C(kiosk.lxc.host) role uses it, so that the hook is in place before
        libvirtd starts. libvirtd is reloaded only when the hook is new and libvirtd is running.
    type: str
    choices: [present, absent, hook]
    default: present
  persistent:
    description:
      - Keep the rules with the guest so that every start applies them again (O(domain) only).
      - Defaults to V(true) for O(domain). With O(state=absent) the rules are also taken out of the stored ones.
    type: bool
author:
  - kiosk.lxc contributors (@kiosk-lxc)
"""

EXAMPLES = r"""
- name: Let player1 open every ALSA device, now and after every start
  kiosk.lxc.cgroup_device:
    domain: player1
    rules:
      - {type: c, major: alsa, minor: "*", access: rw}

- name: Give a systemd-nspawn machine its sound card back (seed recipe, done properly)
  kiosk.lxc.cgroup_device:
    machine: rim
    rules: ["c 116:* rwm"]

- name: Install the libvirt hook on a kiosk host before any guest has rules (what the host role does)
  kiosk.lxc.cgroup_device:
    state: hook

- name: Take the input devices away again
  kiosk.lxc.cgroup_device:
    domain: player1
    rules: ["c input:* rwm"]
    state: absent
"""

RETURN = r"""
cgroup_version:
  description: V(v1) or V(v2); null when the guest is not running.
  returned: always
  type: str
cgroup_path:
  description: The cgroup directory (or, for a systemd machine on v2, its scope unit); null when not running.
  returned: always
  type: str
rules:
  description: The target's effective device rules after the change (predicted in check mode).
  returned: always
  type: list
  elements: str
  sample: ["c 1:3 rwm", "c 136:* rwm", "c 116:* rw"]
added:
  description: Rules written to the allow list.
  returned: always
  type: list
  elements: str
removed:
  description: Rules written to the deny list.
  returned: always
  type: list
  elements: str
applied:
  description: False when the guest is not running and only the stored rules changed.
  returned: always
  type: bool
persistent_rules:
  description: The guest's stored rules after the change; null when O(persistent) is false.
  returned: always
  type: list
  elements: str
actions:
  description: What was done, or would be done in check mode.
  returned: always
  type: list
  elements: str
"""

import contextlib

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup.device import Host, run
from ansible_collections.kiosk.lxc.plugins.module_utils.common import results, text, virt
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **virt.ARGUMENT_SPEC,
            domain=dict(type="str"),
            machine=dict(type="str"),
            cgroup=dict(type="str"),
            rules=dict(type="list", elements="raw"),
            state=dict(type="str", default="present", choices=["present", "absent", "hook"]),
            persistent=dict(type="bool"),
        ),
        mutually_exclusive=[("domain", "machine", "cgroup")],
        required_if=[
            ("state", "present", ("domain", "machine", "cgroup"), True),
            ("state", "absent", ("domain", "machine", "cgroup"), True),
            ("state", "present", ("rules",)),
            ("state", "absent", ("rules",)),
        ],
        supports_check_mode=True,
    )
    if module.params["domain"] and virt.libvirt is None:
        module.fail_json(msg=missing_required_lib("libvirt-python"), exception=str(virt.LIBVIRT_IMPORT_ERROR))
    try:
        text.check_params(module.params)  # every string may reach a file, a command or XML
        # Only a libvirt guest needs libvirtd; a systemd machine or a raw cgroup does not.
        with virt.connection(module.params["uri"]) if module.params["domain"] else contextlib.nullcontext() as conn:
            result = run(module.params, conn, module.check_mode, Host(run=module.run_command))
    except KioskError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    module.exit_json(**results.hand_over(module, result))


if __name__ == "__main__":
    main()
