#!/usr/bin/python
# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: guest
short_description: All of a kiosk's guests in one call - ids, rootfs, files, definition, sound, start, lease
version_added: 0.2.0
description:
  - Reconciles every guest in O(guests). For each - its subordinate ids (profile V(confined)), its own cgroup of the
    C(name=systemd) hierarchy on a cgroup v1 host without systemd, its own rootfs cloned from the base built for its
    package set, the files the collection puts into that rootfs, its definition (domain fields, that cgroup's mount
    and its sound cards, compared and defined once), its run state and its DHCP lease.
  - Each guest has one plan - its actions, in order, and its diff. A check run returns the plans a real run carries
    out, files written into the guest's rootfs included. No link the guest planted in its rootfs is followed.
  - Guests are applied side by side, and their leases are waited for within one overall O(network_wait). A guest
    that fails is named in the error while the others are still served.
  - A guest keeps the profile its metadata records; see docs/guest.md for the profiles.
  - Every entry is checked before anything is touched; a bad one fails naming C(guests[N].field).
extends_documentation_fragment:
  - kiosk.lxc.libvirt
  - ansible.builtin.action_common_attributes
  - kiosk.lxc.attributes
options:
  kiosk:
    description:
      - This kiosk's name (the role passes C(inventory_hostname)). It is recorded in each guest's metadata, names the
        guests O(prune) may remove, and with the guest's name gives its MAC (P(kiosk.lxc.guest_mac#filter) filter).
    type: str
    required: true
  guests:
    description: Every guest of this kiosk.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Guest name; letters, digits, C(.), C(_) and C(-), at most 64 characters.
        type: str
        required: true
      state:
        description: V(absent) stops and undefines the guest; its rootfs and ids are kept, so it can come back.
        type: str
        choices: [running, stopped, absent]
        default: running
      profile:
        description:
          - Its privileges; by default the one its metadata records, for a new guest O(defaults.profile).
          - V(confined) - its own subordinate ids as a user namespace, libvirt's default capabilities, its own
            network namespace, /sys read-only, only its cards.
          - V(privileged) - UNSAFE, root in the guest is root on the host - every capability and, with sound, the
            host's /sys read-write.
          - V(legacy) - what a guest defined before profiles existed has - its idmap, capabilities and private network
            are left as they are.
          - V(seed000) - the old name of V(privileged), deprecated.
        type: str
        choices: [confined, privileged, legacy, seed000]
      memory:
        description:
          - Memory; an integer is MiB, a string may end in C(KiB), C(MiB) or C(GiB). Default O(defaults.memory).
        type: raw
      vcpu:
        description: Virtual CPUs. Default O(defaults.vcpu).
        type: int
      init:
        description: Absolute path of its init. Default O(defaults.init).
        type: str
      autostart:
        description: Start it when libvirtd starts. Default O(defaults.autostart).
        type: bool
      packages:
        description: Packages on top of O(base_packages); the pair chooses its base in O(bases).
        type: list
        elements: str
        default: []
      network:
        description: Its network.
        type: dict
        suboptions:
          bridge:
            description: The bridge it attaches to. Default O(defaults.bridge).
            type: str
          ip:
            description:
              - Its static lease (given by the network role).
              - The guest's bridge port is bound to it and to the guest's MAC (libvirt nwfilter
                C(clean-traffic)). The guest can send IPv4 and ARP only as this address and frames only
                from its own MAC, so it cannot take over another guest's address.
              - Without it the port is bound to the guest's MAC only (C(no-mac-spoofing)).
              - Either way the host needs libvirt's nwfilter driver, its filter definitions
                (Debian C(libvirt-daemon-config-nwfilter)) and C(ebtables).
            type: str
          antispoof:
            description:
              - Whether the guest's bridge port has the anti-spoofing filter of O(guests[].network.ip).
              - Omitted, a new guest gets it, and a guest defined without one (by an older kiosk.lxc) keeps
                its definition as it is, with a warning, so that an upgrade restarts no guest on its own.
              - V(true) adds it (the guest restarts once to get it); V(false) keeps the port unfiltered.
            type: bool
      sound:
        description: Its sound card(s); a guest without O(guests[].sound) has none (only what sound added is removed).
        type: dict
        suboptions:
          cards:
            description: Card selectors, as M(kiosk.lxc.sound_passthrough) takes them; every card when omitted.
            type: list
            elements: dict
            suboptions:
              usb:
                description: USB V(vendor:product) in hex, for example V(0c76:161f).
                type: str
              id:
                description: ALSA card id.
                type: str
              name:
                description: Card name or USB product string.
                type: str
              path:
                description: udev C(ID_PATH) of the card.
                type: str
              serial:
                description: USB serial number.
                type: str
          profile:
            description:
              - How its sound server finds the cards (see M(kiosk.lxc.sound_passthrough)); by default V(sysfs) for
                V(privileged), else O(defaults.sound_profile). V(sysfs) is refused for V(confined).
            type: str
            choices: [udev_data, sysfs]
          missing:
            description: What a selector that matches no card does.
            type: str
            choices: [fail, ignore]
            default: fail
  defaults:
    description: What a guest entry that does not say gets.
    type: dict
    default: {}
    suboptions:
      init:
        description: Init.
        type: str
        default: /lib/systemd/systemd
      memory:
        description: Memory.
        type: raw
        default: 512MiB
      vcpu:
        description: Virtual CPUs.
        type: int
        default: 1
      autostart:
        description: Autostart.
        type: bool
        default: true
      bridge:
        description: Bridge.
        type: str
        default: lxcbr0
      profile:
        description: Profile of a new guest (V(seed000) is the deprecated name of V(privileged)).
        type: str
        choices: [confined, privileged, seed000]
        default: confined
      sound_profile:
        description: Sound profile of a guest with sound whose profile does not choose one.
        type: str
        choices: [udev_data, sysfs]
        default: udev_data
  bases:
    description:
      - Base rootfs paths (built by M(kiosk.lxc.rootfs)) by package set - the sorted union of a guest's
        O(guests[].packages) and O(base_packages), comma-joined (the rootfs role's C(kiosk_rootfs_bases)).
    type: dict
    default: {}
  base_packages:
    description: Packages every base has (the rootfs role's C(kiosk_rootfs_packages)).
    type: list
    elements: str
    default: []
  guest_dir:
    description: Where the guests' own root filesystems live.
    type: path
    default: /var/lib/kiosk-lxc/guests
  subid_count:
    description: How many subordinate uids and gids each guest with its own ids gets (M(kiosk.lxc.subid)).
    type: int
    default: 65536
  systemd_cgroup_dir:
    description:
      - On a host with cgroup v1's C(name=systemd) hierarchy and no systemd, where a V(confined) guest gets a cgroup
        of its own, mounted over its C(/sys/fs/cgroup/systemd).
    type: path
    default: /sys/fs/cgroup/systemd/kiosk-lxc
  network_wait:
    description: Seconds to wait, for all guests together, for every running guest's DHCP lease; V(0) skips the wait.
    type: int
    default: 120
  leases_dir:
    description: Where the bridges' dnsmasq keep their leases (M(kiosk.lxc.lxc_bridge)).
    type: path
    default: /var/lib/kiosk-lxc
  shutdown_timeout:
    description: Seconds a guest gets to shut down (for a restart or removal) before it is destroyed.
    type: int
    default: 30
  prune:
    description:
      - Remove (stop and undefine) the guests whose metadata names this O(kiosk) and that O(guests) does not list.
        Guests of other kiosks, and guests without that metadata, are never touched.
      - Only this module records that metadata key; M(kiosk.lxc.lxc_domain) refuses to set it and keeps it as it is,
        so a domain it defined is never pruned and it cannot hide a guest from prune.
    type: bool
    default: false
notes:
  - Guests with state V(absent) or pruned keep their rootfs directory and subordinate ids, so the guest's state is not
    lost; remove them by hand.
author:
  - kiosk.lxc contributors (@kiosk-lxc)
"""

EXAMPLES = r"""
- name: The players of this kiosk
  kiosk.lxc.guest:
    kiosk: "{{ inventory_hostname }}"
    bases: "{{ kiosk_rootfs_bases }}"
    defaults: {bridge: kioskbr0, memory: 256MiB}
    guests:
      - name: player1
        sound: {cards: [{usb: "0c76:161f"}]}
      - name: signage
        packages: [chromium]
  register: kiosk_guests_result

- name: Say where they are
  ansible.builtin.debug:
    msg: "{{ kiosk_guests_result.report }}"

- name: Only player1 stays; the other guests of this kiosk go
  kiosk.lxc.guest:
    kiosk: "{{ inventory_hostname }}"
    bases: "{{ kiosk_rootfs_bases }}"
    guests: [{name: player1}]
    prune: true
"""

RETURN = r"""
guests:
  description: Each guest, in the order given (pruned ones after).
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: The guest., type: str}
    state: {description: "What it was asked to be: V(running), V(stopped) or V(absent).", type: str}
    changed: {description: Whether anything of it changed (or would change)., type: bool}
    actions:
      description: What ran (or would run) for it, in order.
      type: list
      elements: str
      sample: [write /etc/subuid, write /etc/subgid, build /var/lib/kiosk-lxc/guests/player1 with clone, define, start]
    housekeeping:
      description:
        - Bookkeeping done for it that changes nothing of the guest and is not counted in C(changed), listed in check
          mode too; today, copying the record of a rootfs cloned by the guest role of kiosk.lxc 0.1 (kept inside the
          clone, in the guest's reach) beside the clone. The guest's root is left as it was.
      type: list
      elements: str
    profile: {description: Its profile (V(legacy) for a guest defined before profiles)., type: str}
    rootfs: {description: Its own rootfs., type: str}
    addresses: {description: Its leased addresses., type: list, elements: str}
    cards: {description: The ALSA ids of the cards passed in., type: list, elements: str}
    error: {description: "Why it failed (null when it did not).", type: str}
failed_guests:
  description: The guests that failed (the error message names each, with its cause).
  returned: always
  type: list
  elements: str
report:
  description: By guest name, C(ips), C(cards), C(rootfs) and C(profile) (the role's C(kiosk_guest_report)).
  returned: always
  type: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, _load_params, missing_required_lib
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.validation import check_type_dict
from ansible.module_utils.errors import ArgumentValueError, ElementError, RequiredError
from ansible_collections.kiosk.lxc.plugins.module_utils.common import results, text, virt
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import manage
from ansible_collections.kiosk.lxc.plugins.module_utils.guest import reconcile, spec
from ansible_collections.kiosk.lxc.plugins.module_utils.sound import discovery

ARGUMENT_SPEC = {
    **virt.ARGUMENT_SPEC,
    "kiosk": {"type": "str", "required": True},
    "guests": {"type": "list", "elements": "dict", "default": [], "options": spec.GUEST_OPTIONS},
    "defaults": {"type": "dict", "default": {}, "options": spec.DEFAULTS_OPTIONS},
    "bases": {"type": "dict", "default": {}},
    "base_packages": {"type": "list", "elements": "str", "default": []},
    "guest_dir": {"type": "path", "default": "/var/lib/kiosk-lxc/guests"},
    "subid_count": {"type": "int", "default": 65536},
    "systemd_cgroup_dir": {"type": "path", "default": "/sys/fs/cgroup/systemd/kiosk-lxc"},
    "network_wait": {"type": "int", "default": 120},
    "leases_dir": {"type": "path", "default": "/var/lib/kiosk-lxc"},
    "shutdown_timeout": {"type": "int", "default": 30},
    "prune": {"type": "bool", "default": False},
}


def entry_problem(options: dict, entry, where: str) -> str | None:
    """What ansible-core's own check of one entry refuses first, named by its path (`guests[2].network.ip`).

    ansible-core names a suboption by its parents' names only (`found in 'guests -> network'`), not
    by the entry's index; so each option is put to ansible-core's validator on its own, and its
    suboptions, entry by entry, under their own path. None: ansible-core accepts the entry.
    """
    try:
        entry = check_type_dict(entry)  # as ansible-core reads it: a dict, or k=v / JSON text
    except TypeError:
        return f"{where}: {entry!r} is not a valid dict"
    unknown = sorted(set(entry) - set(options))
    if unknown:
        return f"{where}.{unknown[0]}: is not a field of this entry (its fields: {', '.join(options)})"
    for key, option in options.items():
        path = f"{where}.{key}"
        flat = {k: v for k, v in option.items() if k != "options"}
        result = ArgumentSpecValidator({key: flat}).validate({key: entry[key]} if key in entry else {})
        if result.errors.errors:
            error = result.errors.errors[0]
            if isinstance(error, RequiredError):
                return f"{path}: is required"
            if isinstance(error, ArgumentValueError):
                return f"{path}: {entry[key]!r} must be one of: {', '.join(map(str, option['choices']))}"
            if isinstance(error, ElementError):
                for i, item in enumerate(entry[key]):
                    if ArgumentSpecValidator({key: {"type": option["elements"]}}).validate({key: item}).errors.errors:
                        return f"{path}[{i}]: {item!r} is not a valid {option['elements']}"
            return f"{path}: {entry[key]!r} is not a valid {option['type']}"
        value = result.validated_parameters.get(key)
        if option.get("options") and value is not None:
            items = enumerate(value) if option["type"] == "list" else [(None, value)]
            for i, item in items:
                found = entry_problem(option["options"], item, path if i is None else f"{path}[{i}]")
                if found:
                    return found
    return None


def guests_problem(params) -> str | None:
    """The first bad `guests` entry in the raw parameters, named by its index (None under validate-modules)."""
    guests = (params or {}).get("guests")
    if not isinstance(guests, list):
        return None
    for i, entry in enumerate(guests):
        problem = entry_problem(spec.GUEST_OPTIONS, entry, f"guests[{i}]")
        if problem:
            return problem
    return None


def main():
    # A bad entry fails naming guests[N].field, before ansible-core's own check (which names no index)
    # and before anything is touched; that check, with the same options, still runs for the rest.
    problem = guests_problem(_load_params())
    if problem:
        loose = dict(ARGUMENT_SPEC, guests={"type": "list", "elements": "raw", "default": []})
        AnsibleModule(argument_spec=loose, supports_check_mode=True).fail_json(msg=problem)
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    for lib, err in manage.missing_libs():
        module.fail_json(msg=missing_required_lib(lib), exception=err)

    def run(argv):
        rc, out, err = module.run_command(argv)
        if rc != 0:
            raise KioskError(f"{' '.join(argv[:3])} failed (rc={rc}): {(err or out).strip()[-500:]}")

    def discover(**kwargs):
        if discovery.pyudev is None:
            raise KioskError(missing_required_lib("pyudev"))
        return discovery.discover(**kwargs)

    try:
        text.check_params(p)  # every string may reach a file, a command or XML
        settings = reconcile.Settings(
            kiosk=spec.validate_kiosk(p["kiosk"]),
            defaults=spec.validate_defaults(p["defaults"]),
            **{k: p[k] for k in ("bases", "base_packages", "guest_dir", "subid_count", "systemd_cgroup_dir",
                                 "network_wait", "leases_dir", "shutdown_timeout", "prune")},
        )  # fmt: skip
        with virt.connection(p["uri"]) as conn:
            result = reconcile.ensure(conn, p["guests"], settings, run=run, discover=discover,
                                      check_mode=module.check_mode)  # fmt: skip
    except KioskError as exc:
        module.fail_json(msg=exc.msg, exception=traceback.format_exc(), **exc.details)
    result = results.hand_over(module, result, deprecated=lambda w: "deprecated" in w or "is now called" in w)
    errors = result.pop("errors")
    result["failed_guests"] = result.pop("failed")
    if errors:
        module.fail_json(msg="; ".join(errors), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
