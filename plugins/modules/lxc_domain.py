#!/usr/bin/python
# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: lxc_domain
short_description: Declarative libvirt LXC guests with an honest diff
version_added: 0.1.0
description:
  - Defines, starts, stops and removes a libvirt LXC guest from a few options (or a whole domain XML).
  - The stored definition and the wanted one are normalised the way libvirt stores a definition and compared field
    by field; the guest is redefined only when a field you asked for differs. A redefine keeps the UUID, the MACs
    libvirt generated, the emulator, the architecture, the resource partition and C(<metadata>) that other modules or
    tools keep in their own XML namespaces.
  - Options you leave out keep what the guest has (a new guest gets O(init=/sbin/init), 512 MiB and 1 vCPU).
  - Every option is checked before anything is touched.
extends_documentation_fragment:
  - kiosk.lxc.libvirt
  - ansible.builtin.action_common_attributes
  - kiosk.lxc.attributes
options:
  name:
    description: Guest name; letters, digits, C(.), C(_) and C(-), at most 64 characters.
    type: str
    required: true
  state:
    description:
      - V(present) defines the guest and leaves it running or stopped as it is; V(running) and V(stopped) also set
        that; V(absent) stops (see O(shutdown_timeout)) and undefines it.
    type: str
    choices: [present, running, stopped, absent]
    default: running
  rootfs:
    description: Host directory mounted as the guest's C(/). Required to create a guest (unless O(xml) is given).
    type: path
  init:
    description: Absolute path of the guest's init inside the rootfs.
    type: str
  init_args:
    description: Arguments of O(init), in order.
    type: list
    elements: str
  memory:
    description: Memory limit; an integer is MiB, a string may end in C(KiB), C(MiB) or C(GiB).
    type: raw
  vcpu:
    description: Number of virtual CPUs.
    type: int
  autostart:
    description: Start the guest when libvirtd starts; left as it is when omitted.
    type: bool
  capabilities:
    description: The guest's Linux capabilities (C(<features><capabilities>)). Replaces what the guest has.
    type: dict
    suboptions:
      policy:
        description: The starting set the additions and drops apply to.
        type: str
        choices: [default, allow, deny]
        default: default
      add:
        description: Capabilities to grant, such as V(sys_nice).
        type: list
        elements: str
        default: []
      drop:
        description: Capabilities to take away, such as V(sys_module).
        type: list
        elements: str
        default: []
  filesystems:
    description:
      - Every mount besides the root, in order; replaces the guest's list (a mount with the same target is updated).
    type: list
    elements: dict
    suboptions:
      type:
        description: V(mount) binds a host directory, V(ram) is a tmpfs of O(filesystems[].size).
        type: str
        choices: [mount, ram]
        default: mount
      source:
        description: Absolute host path (type V(mount)).
        type: path
      target:
        description: Absolute path inside the guest.
        type: str
        required: true
      readonly:
        description: Mount read-only.
        type: bool
        default: false
      size:
        description: Size of a V(ram) filesystem, as for O(memory).
        type: raw
  interfaces:
    description: Every network interface, in order; replaces the guest's list. A MAC libvirt generated is kept.
    type: list
    elements: dict
    suboptions:
      bridge:
        description: Host bridge to attach to.
        type: str
      network:
        description: Libvirt network to attach to.
        type: str
      mac:
        description: Fixed unicast MAC address; libvirt picks one when omitted.
        type: str
  hostdevs:
    description:
      - Host character devices passed into the guest (C(<hostdev mode='capabilities' type='misc'>)), which also
        allows them in the guest's device cgroup. Replaces the guest's list of such devices.
    type: list
    elements: path
  idmap:
    description:
      - "User namespace mapping: C(uid) and C(gid), each a dict of C(start), C(target) and C(count)."
      - An empty dict removes the mapping.
    type: dict
  privnet:
    description: Give the guest its own network namespace even without interfaces.
    type: bool
  metadata:
    description:
      - Your key/values, kept in the guest's C(<metadata>) under the collection's XML namespace; replaces the ones
        set before. Values are stored as strings.
      - The keys C(kiosk) and C(profile) are M(kiosk.lxc.guest)'s - the kiosk a guest belongs to (the guests its
        O(kiosk.lxc.guest#module:prune) may remove) and the profile it keeps. They are refused here, and a guest's
        stored ones are kept when this replaces the others.
    type: dict
  xml:
    description:
      - A whole domain XML instead of the options above (it cannot be combined with them). The UUID, generated
        MACs and other namespaces' metadata of an existing guest are kept, and so are its metadata keys C(kiosk) and
        C(profile) (see O(metadata)); the XML may not set those.
    type: str
  from_native:
    description:
      - Adopt an lxc-start container. The path of its config (such as C(/var/lib/lxc/NAME/config)) is converted by
        libvirt's own C(lxc-tools) conversion (what C(virsh domxml-from-native) runs) and the rootfs stays where it
        is. The other definition options given apply on top of the conversion; it cannot be combined with O(xml).
      - Where that conversion falls short it is completed (a C(dir:) rootfs, C(lxc.init.cmd), binds of C(/dev)
        paths) and C(lxc.cgroup.devices.allow) lines are kept as persistent rules of M(kiosk.lxc.cgroup_device);
        every line that was not converted is listed in RV(native.not_converted).
      - Stop the container with C(lxc-stop) before the guest is started by libvirt.
    type: path
  restart:
    description: What to do when the definition of a running guest changed. V(never) reports RV(restart_pending).
    type: str
    choices: [on_change, never]
    default: on_change
  shutdown_timeout:
    description: Seconds to wait for a graceful shutdown before the guest is destroyed.
    type: int
    default: 30
author:
  - kiosk.lxc contributors (@kiosk-lxc)
"""

EXAMPLES = r"""
- name: A running player guest
  kiosk.lxc.lxc_domain:
    name: player1
    rootfs: /var/lib/kiosk-lxc/guests/player1/rootfs
    memory: 512MiB
    autostart: true
    capabilities:
      add: [sys_nice]
      drop: [sys_module]
    filesystems:
      - {type: ram, target: /run, size: 64MiB}
    interfaces:
      - {bridge: lxcbr0}
    metadata:
      role: player

- name: Change memory now, restart at the next maintenance window
  kiosk.lxc.lxc_domain:
    name: player1
    memory: 1GiB
    restart: never

- name: Adopt an lxc-start container, keeping its rootfs in /var/lib/lxc/player2/rootfs
  kiosk.lxc.lxc_domain:
    name: player2
    from_native: /var/lib/lxc/player2/config
    state: present
  register: kiosk_adopted

- name: Show what libvirt could not take over
  ansible.builtin.debug:
    var: kiosk_adopted.native.not_converted

- name: Remove it
  kiosk.lxc.lxc_domain:
    name: player1
    state: absent
"""

RETURN = r"""
state:
  description: The guest's state afterwards (V(running), V(stopped), V(paused), V(absent), ...).
  returned: always
  type: str
uuid:
  description: The guest's UUID (null in check mode for a guest not yet defined).
  returned: always
  type: str
xml:
  description: The stored definition afterwards (in check mode the one that would be stored).
  returned: always
  type: str
actions:
  description: What ran (or would run), in order, from V(define), V(start), V(stop), V(restart), V(resume),
    V(undefine), V(autostart_on), V(autostart_off).
  returned: always
  type: list
  elements: str
  sample: [define, start]
changes:
  description: The definition's fields that differ, such as V(memory) or V(devices/interface[1]/source@bridge).
  returned: always
  type: list
  elements: str
restarted:
  description: Whether the running guest was (or would be) restarted to take a changed definition.
  returned: always
  type: bool
restart_pending:
  description: Whether the guest runs an older definition than the stored one (with O(restart=never)).
  returned: always
  type: bool
native:
  description: With O(from_native), what happened to the lines of the config.
  returned: when O(from_native) is given and O(state) is not V(absent)
  type: dict
  contains:
    config:
      description: The config that was converted.
      type: str
    carried_over:
      description:
        - Lines libvirt's conversion drops or gets wrong that were carried over, each with its C(line) number,
          C(text) and C(as) (V(init), V(bind mount), V(hostdev) or V(cgroup_device rule)).
      type: list
      elements: dict
    not_converted:
      description: Lines the guest does not get, each with its C(line) number, C(text) and the C(reason).
      type: list
      elements: dict
      sample: [{line: 7, text: "lxc.apparmor.profile = unconfined", reason: "libvirt applies its own security driver"}]
forced_stop:
  description: Whether a stop had to destroy the guest after O(shutdown_timeout).
  returned: when the guest was stopped or restarted
  type: bool
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.kiosk.lxc.plugins.module_utils.common import results, text, virt
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import manage, native

FS_SPEC = {
    "type": {"type": "str", "choices": ["mount", "ram"], "default": "mount"},
    "source": {"type": "path"},
    "target": {"type": "str", "required": True},
    "readonly": {"type": "bool", "default": False},
    "size": {"type": "raw"},
}
IFACE_SPEC = {"bridge": {"type": "str"}, "network": {"type": "str"}, "mac": {"type": "str"}}
CAPS_SPEC = {
    "policy": {"type": "str", "choices": ["default", "allow", "deny"], "default": "default"},
    "add": {"type": "list", "elements": "str", "default": []},
    "drop": {"type": "list", "elements": "str", "default": []},
}


def main():
    module = AnsibleModule(
        argument_spec={
            **virt.ARGUMENT_SPEC,
            "name": {"type": "str", "required": True},
            "state": {
                "type": "str",
                "choices": ["present", "running", "stopped", "absent"],
                "default": "running",
            },
            "rootfs": {"type": "path"},
            "init": {"type": "str"},
            "init_args": {"type": "list", "elements": "str"},
            "memory": {"type": "raw"},
            "vcpu": {"type": "int"},
            "autostart": {"type": "bool"},
            "capabilities": {"type": "dict", "options": CAPS_SPEC},
            "filesystems": {"type": "list", "elements": "dict", "options": FS_SPEC},
            "interfaces": {"type": "list", "elements": "dict", "options": IFACE_SPEC},
            "hostdevs": {"type": "list", "elements": "path"},
            "idmap": {"type": "dict"},
            "privnet": {"type": "bool"},
            "metadata": {"type": "dict"},
            "xml": {"type": "str"},
            "from_native": {"type": "path"},
            "restart": {"type": "str", "choices": ["on_change", "never"], "default": "on_change"},
            "shutdown_timeout": {"type": "int", "default": 30},
        },
        mutually_exclusive=[("xml", "from_native")],
        supports_check_mode=True,
    )
    for lib, err in manage.missing_libs():
        module.fail_json(msg=missing_required_lib(lib), exception=err)
    try:
        text.check_params(module.params, skip=("xml",))  # every string may reach a file, a command or XML
        with virt.connection(module.params["uri"]) as conn:
            ensure = native.ensure if module.params["from_native"] else manage.ensure
            result = ensure(conn, module.params, check_mode=module.check_mode)
    except KioskError as exc:
        module.fail_json(msg=exc.msg, exception=traceback.format_exc(), **exc.details)
    module.exit_json(**results.hand_over(module, result))


if __name__ == "__main__":
    main()
