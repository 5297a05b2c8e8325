#!/usr/bin/python
# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: host_info
short_description: What a kiosk host offers libvirt LXC guests, and what would stop them
version_added: 0.1.0
description:
  - A preflight in the spirit of C(lxc-checkconfig), read from the running kernel rather than a kernel config.
  - Reports namespaces, the cgroup layout (V(v1), V(v2) or V(hybrid)) and its device controller, the C(alsa),
    C(drm) and C(input) majors from C(/proc/devices), the ALSA cards, whether systemd runs, and whether libvirt's LXC
    driver is installed.
  - What ARM boards get wrong is checked too, each with its fix - the memory cgroup controller disabled (Raspberry Pi
    OS kernels leave it off unless the kernel command line says C(cgroup_enable=memory)) and a cgroup v2 kernel that
    cannot attach BPF device programs are problems; a kernel without the C(snd-usb-audio) module and a 32-bit userland
    on a 64-bit kernel are limits.
  - The kernel's config is read from C(/boot/config-<release>) or C(/proc/config.gz) (else its symbols in
    C(/proc/kallsyms)), its modules from C(/lib/modules/<release>), the userland's word size from the ELF header of
    the Python running the module.
  - RV(problems) lists what stops guests from running, RV(limits) what limits them; the host role fails on the
    first list.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - kiosk.lxc.attributes.no_diff
options:
  require_libvirt:
    description: Count a missing libvirt LXC driver as a problem.
    type: bool
    default: true
  packages:
    description:
      - Debian packages the caller needs; RV(packages_missing) lists those dpkg does not list as installed, so a
        play runs C(ansible.builtin.apt) only when something is missing (opening apt's cache costs seconds).
      - A name that is not a plain package name (a version, a wildcard, an architecture) counts as missing; one with
        a control character is refused, naming its index.
      - A missing libvirt LXC driver is not a problem when C(libvirt-daemon-driver-lxc) is among the missing ones
        (the caller installs it next).
    type: list
    elements: str
    default: []
    version_added: 0.2.0
author:
  - kiosk.lxc contributors (@kiosk-lxc)
"""

EXAMPLES = r"""
- name: Check that this host can run kiosk guests
  kiosk.lxc.host_info:
  register: kiosk_host

- name: Stop here when it cannot
  ansible.builtin.assert:
    that: kiosk_host.problems | length == 0
    fail_msg: "{{ kiosk_host.problems | join(' ') }}"
"""

RETURN = r"""
host:
  description: What the host offers.
  returned: always
  type: dict
  contains:
    architecture:
      description: Machine architecture, for example V(aarch64).
      type: str
    kernel:
      description: Kernel release.
      type: str
    namespaces:
      description: Namespace name to whether the kernel has it.
      type: dict
    user_namespaces:
      description: Whether user namespaces can be created.
      type: bool
    cgroup:
      description:
        - Cgroup layout (V(v1), V(v2), V(hybrid)), its mounts and the device controller.
        - C(memory) is whether the memory controller is enabled (C(/proc/cgroups); null when unknown),
          C(memory_disabled_by) the kernel command line word that disabled it, C(bpf_device_control) whether cgroup v2
          device programs can be attached (null when unknown).
      type: dict
    snd_usb_audio:
      description: Whether the running kernel has the snd-usb-audio module, built in or loadable (null when unknown).
      type: bool
    userland:
      description: Word size (C(bits), 32 or 64) and ELF machine of the userland running the module, null when unknown.
      type: dict
    majors:
      description: Character majors by name (null when the driver is not loaded).
      type: dict
    sound_cards:
      description: ALSA card descriptions from /proc/asound/cards.
      type: list
      elements: str
    systemd:
      description: Whether systemd is the running service manager.
      type: bool
    libvirt_lxc_driver:
      description: Whether libvirt's LXC driver is installed.
      type: bool
    packages:
      description: The Debian packages installed when it ran (from dpkg's status file), sorted.
      type: list
      elements: str
      version_added: 0.2.0
packages_missing:
  description: Those of O(packages) that are not installed, in the order given.
  returned: always
  type: list
  elements: str
  version_added: 0.2.0
problems:
  description: One sentence per thing that stops guests from running on this host.
  returned: always
  type: list
  elements: str
limits:
  description: One sentence per thing that limits guests on this host.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.kiosk.lxc.plugins.module_utils.common import dpkg, text
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.host.preflight import gather, problems


def main():
    module = AnsibleModule(
        argument_spec=dict(
            require_libvirt=dict(type="bool", default=True),
            packages=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    try:
        text.check_params(module.params)  # the package names reach apt's command line (the host role)
    except KioskError as exc:
        module.fail_json(msg=exc.msg)
    facts = gather()
    missing = dpkg.missing(module.params["packages"], set(facts["packages"]))
    fatal, warn = problems(facts, require_libvirt=module.params["require_libvirt"], installing=missing)
    for w in warn:
        module.warn(w)
    module.exit_json(changed=False, host=facts, problems=fatal, limits=warn, packages_missing=missing)


if __name__ == "__main__":
    main()
