#!/usr/bin/python
# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: sound_passthrough
short_description: Give a libvirt LXC guest the host's sound cards
version_added: 0.1.0
description:
  - Finds the chosen ALSA cards with udev and gives the guest each of their device nodes (C(controlC<n>),
    C(pcmC<n>D*), C(hwC<n>D*), C(midiC<n>D*)) plus the shared C(timer) and C(seq), as
    C(<hostdev mode='capabilities' type='misc'>) entries (a device cgroup rule on cgroup v1 and v2) and, for a
    guest without a user namespace, a bind of the host's C(/dev/snd), so the guest sees the real nodes. An
    idmapped guest gets the nodes libvirt makes for each hostdev instead (the host's would show as
    nobody:nogroup there). Other cards stay closed (EPERM).
  - O(profile=udev_data) keeps the guest's C(/sys) read-only and binds a udev database of the guest's own
    (O(udev_data_dir)/<domain>, the chosen cards' records only, never the host's whole C(/run/udev)) read-only as
    its C(/run/udev), under a C(/run) of the guest's own, so PulseAudio and PipeWire find the cards.
    O(profile=sysfs) passes the host's C(/sys) and C(/sys/fs/fuse/connections) through and writes a
    systemd-networkd drop-in
    (C(BindReadOnlyPaths=/sys)) into the guest's rootfs so its networking keeps working. O(profile=sysfs) is
    refused for a guest with an C(<idmap>) (its own user namespace). The drop-in is written without following
    links in the guest's rootfs; a link planted at its path or on the way fails the task, and nothing is touched.
  - The definition is changed through M(kiosk.lxc.lxc_domain)'s code path (same diff, same restart policy). The
    card selectors are kept in the guest's metadata for the hotplug agent; O(state=absent) removes all of it.
extends_documentation_fragment:
  - kiosk.lxc.libvirt
  - kiosk.lxc.sound_selectors
  - ansible.builtin.action_common_attributes
  - kiosk.lxc.attributes
options:
  domain:
    description: The guest (it must be defined).
    type: str
    required: true
  cards:
    description:
      - Which host cards; a card matches a selector when it matches every key given. Omitted means every card.
      - M(kiosk.lxc.sound_card_info) lists the cards with their selector values.
  profile:
    description: How the guest's sound stack finds the cards (see the description).
    type: str
    choices: [udev_data, sysfs]
    default: udev_data
  missing:
    description: A selector that matches no card fails the task (V(fail)) or is kept for a card plugged in later.
    type: str
    choices: [fail, ignore]
    default: fail
  state:
    description: Whether the guest has the cards (V(present)) or none of this module's changes (V(absent)).
    type: str
    choices: [present, absent]
    default: present
  restart:
    description: Restart a running guest whose definition changed (V(on_change)), or only report it (V(never)).
    type: str
    choices: [on_change, never]
    default: on_change
  shutdown_timeout:
    description: Seconds a graceful shutdown may take before the guest is destroyed, on restart.
    type: int
    default: 30
  host_dev_dir:
    description: Where the host's device nodes are, when not in C(/dev) (a chroot-ed or test host).
    type: path
    default: /dev
  host_udev_dir:
    description:
      - The host's udev data directory. O(profile=udev_data) needs it (udev running on the host), but does not bind it
        into the guest any more; the guest gets only its own cards' records (O(udev_data_dir)).
    type: path
    default: /run/udev
  udev_data_dir:
    description:
      - Where each guest's own udev data is kept on the host, in a directory named after the guest, bound read-only as
        the guest's C(/run/udev) by O(profile=udev_data).
      - It holds the udev records of the guest's cards, their nodes and the shared timer/sequencer, and nothing of the
        host's other devices (no disk serials). The hotplug agent adds and removes a hot-plugged card's records, and
        refreshes them from the cards present when it starts and when the guest starts.
      - An absolute path, as are O(host_dev_dir) and O(host_udev_dir); a relative one is refused.
    type: path
    default: /var/lib/kiosk-lxc/udev
requirements:
  - pyudev (C(python3-pyudev) on Debian)
  - lxml (C(python3-lxml) on Debian)
author:
  - kiosk.lxc contributors (@kiosk-lxc)
"""

EXAMPLES = r"""
- name: The USB card of seed 000, in the player guest
  kiosk.lxc.sound_passthrough:
    domain: player1
    cards:
      - usb: "0c76:161f"

- name: Whatever is plugged into this USB port, now or later, the old way (host /sys)
  kiosk.lxc.sound_passthrough:
    domain: player1
    cards:
      - path: platform-xhci-hcd.0.auto-usb-0:1:1.0
    missing: ignore
    profile: sysfs

- name: No sound in the player guest any more
  kiosk.lxc.sound_passthrough:
    domain: player1
    state: absent
"""

RETURN = r"""
actions:
  description: What ran (or would run in check mode), e.g. V(define), V(restart), V(write <drop-in path>).
  returned: always
  type: list
  elements: str
changes:
  description: The definition's fields that differ.
  returned: always
  type: list
  elements: str
cards:
  description: The chosen cards, as M(kiosk.lxc.sound_card_info) returns them.
  returned: always
  type: list
  elements: dict
nodes:
  description: The host device nodes the guest is given.
  returned: always
  type: list
  elements: str
unmatched:
  description: Selectors that matched no card (with O(missing=ignore)).
  returned: always
  type: list
  elements: dict
restarted:
  description: Whether the guest was restarted.
  returned: always
  type: bool
restart_pending:
  description: Whether the running guest needs a restart to get the change (O(restart=never)).
  returned: always
  type: bool
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.kiosk.lxc.plugins.module_utils.common import results, text, virt
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.sound import discovery, passthrough, plan
from ansible_collections.kiosk.lxc.plugins.module_utils.sound.select import SELECTOR_KEYS


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **virt.ARGUMENT_SPEC,
            domain=dict(type="str", required=True),
            cards=dict(type="list", elements="dict", options={k: dict(type="str") for k in SELECTOR_KEYS}),
            profile=dict(type="str", choices=list(plan.PROFILES), default="udev_data"),
            missing=dict(type="str", choices=["fail", "ignore"], default="fail"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            restart=dict(type="str", choices=["on_change", "never"], default="on_change"),
            shutdown_timeout=dict(type="int", default=30),
            host_dev_dir=dict(type="path", default="/dev"),
            host_udev_dir=dict(type="path", default="/run/udev"),
            udev_data_dir=dict(type="path", default="/var/lib/kiosk-lxc/udev"),
        ),
        supports_check_mode=True,
    )
    for lib, mod in (("pyudev", discovery.pyudev), ("lxml", plan.etree)):
        if mod is None:
            module.fail_json(msg=missing_required_lib(lib), exception=traceback.format_exc())
    try:
        text.check_params(module.params)  # every string may reach a file, a command or XML
        with virt.connection(module.params["uri"]) as conn:
            result = passthrough.ensure(conn, module.params, check_mode=module.check_mode)
    except KioskError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    if module.params["state"] == "present" and not result["cards"]:
        module.warn(
            f"Guest '{module.params['domain']}': no sound card on this host matched, so it has no sound "
            "until one appears (missing: ignore)."
        )
    module.exit_json(**results.hand_over(module, result))


if __name__ == "__main__":
    main()
