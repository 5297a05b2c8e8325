#!/usr/bin/python
# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: hotplug_agent
short_description: The host agent that hands hot-plugged sound cards to running LXC guests
version_added: 0.1.0
description:
  - Installs and runs C(kiosk-lxc-hotplug), a small Python daemon on the host. On the add (once udev has finished the
    card, C(SOUND_INITIALIZED) on it) or removal of a sound card (a udev monitor), it finds the running guests whose
    M(kiosk.lxc.sound_passthrough) selectors choose the card, and grants (or revokes) exactly that card's device nodes
    in each guest's device cgroup (v1 or v2), plus the shared C(timer) and C(seq) with a guest's first card; makes the
    nodes in the guest's C(/dev/snd) unless that is a live bind of the host's; and tells PulseAudio
    (C(module-alsa-card)) or PipeWire (WirePlumber restart) inside the guest, restarting the guest's sound service as a
    fallback.
  - A guest with its own udev data (O(kiosk.lxc.sound_passthrough#module:udev_data_dir)) gets a plugged card's
    udev records and loses them on removal; when the agent starts (a host reboot) and when a guest (re)starts,
    that directory is made to hold exactly the records of the guest's cards present then.
  - A card no guest's selectors choose stays closed to all guests. A failure in one guest is logged and never
    stops the others. The agent logs to syslog (the journal) where C(/dev/log) exists, else to O(log_file),
    one line per guest and card, ending with how many ms after the udev event it was done and where the time went.
  - Where systemd runs, a unit C(kiosk-lxc-hotplug.service) starts it at boot; elsewhere the module starts it
    as a daemon (pid file C(/run/kiosk-lxc-hotplug.pid)), which nothing restarts after a reboot until the
    module runs again.
  - The agent's code is the part of this collection's C(module_utils) it imports (computed from its entry point
    at every run), in a directory of its own, C(/usr/local/lib/kiosk-lxc/agent-<digest>) (the first 16 hex digits
    of the sha256 of its files), which the start script C(/usr/local/sbin/kiosk-lxc-hotplug) names. A new version
    is written under a temporary name and renamed into place, the agent is restarted on it, then the old directory
    is removed. The M(kiosk.lxc.cgroup_device) hook has a directory of its own, so installing or upgrading it
    never restarts the agent.
  - A running agent is restarted when its own files change (directory, script, unit), and when it is older than
    any of them (a run that wrote them and failed before the restart).
  - The library both shared before, C(/usr/local/lib/kiosk-lxc/python), is removed once neither the hook nor the
    agent's start script names it, so a host installed by an earlier version upgrades in place.
extends_documentation_fragment:
  - kiosk.lxc.libvirt
  - ansible.builtin.action_common_attributes
  - kiosk.lxc.attributes
options:
  state:
    description:
      - V(present) installs the agent and keeps it running; V(absent) stops it and removes its files and its
        library directories (the cgroup_device hook's stay).
    type: str
    choices: [present, absent]
    default: present
  rescan:
    description:
      - Seconds without udev events after which the agent rescans, so that a guest started after its card
        was plugged in gets it.
    type: float
    default: 5
  kiosk_user:
    description:
      - The guests' user whose sound server the agent tells about a card (looked up in each guest's C(/etc/passwd) and
        mapped through the guest's uid map). A process of any other uid named like a sound server is not told.
    type: str
    default: kiosk
  log_file:
    description:
      - Log to this file instead of syslog; without syslog (no C(/dev/log)) the agent logs to
        C(/var/log/kiosk-lxc/hotplug.log).
    type: path
  python:
    description: The interpreter that runs the agent; it needs pyudev, libvirt-python and lxml.
    type: path
    default: /usr/bin/python3
requirements:
  - On the host, for the agent - C(python3-pyudev), C(python3-libvirt), C(python3-lxml), C(util-linux) (nsenter).
author:
  - kiosk.lxc contributors (@kiosk-lxc)
"""

EXAMPLES = r"""
- name: Sound cards plugged in later reach their guests without a playbook run
  kiosk.lxc.hotplug_agent:

- name: A guest that gets the USB card whenever it is plugged in
  kiosk.lxc.sound_passthrough:
    domain: player1
    cards:
      - usb: "0c76:161f"
    missing: ignore

- name: No agent on this host
  kiosk.lxc.hotplug_agent:
    state: absent
"""

RETURN = r"""
actions:
  description: What was done, or would be done in check mode.
  returned: always
  type: list
  elements: str
  sample:
    - install /usr/local/lib/kiosk-lxc/agent-3f1c0d9a6b2e7c41
    - install /usr/local/sbin/kiosk-lxc-hotplug
    - restart kiosk-lxc-hotplug
    - remove /usr/local/lib/kiosk-lxc/agent-0b7e2a94c5d13f68
service:
  description: How the agent is kept running, V(systemd) (a unit) or V(daemon) (started by this module).
  returned: always
  type: str
running:
  description: Whether the agent runs once the module is done.
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.kiosk.lxc.plugins.module_utils.common import results, text, virt
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug.install import Host, run


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **virt.ARGUMENT_SPEC,
            state=dict(type="str", default="present", choices=["present", "absent"]),
            rescan=dict(type="float", default=5.0),
            kiosk_user=dict(type="str", default="kiosk"),
            log_file=dict(type="path"),
            python=dict(type="path", default="/usr/bin/python3"),
        ),
        supports_check_mode=True,
    )
    try:
        text.check_params(module.params)  # every string may reach a file, a command or XML
        result = run(module.params, module.check_mode, Host(run=module.run_command))
    except (KioskError, OSError) as exc:
        msg = exc.msg if isinstance(exc, KioskError) else f"The hotplug agent: {exc}"
        module.fail_json(msg=msg, **getattr(exc, "details", {}))
    module.exit_json(**results.hand_over(module, result))


if __name__ == "__main__":
    main()
