#!/usr/bin/python
# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: rootfs
short_description: A guest root filesystem, built once per definition and never half-used
version_added: 0.1.0
description:
  - Builds a root filesystem for libvirt LXC guests under O(cache_dir), named by what defines it (method, release,
    architecture, mirror, packages, image checksum, guest OS settings). The same definition finds the same directory,
    so a second run changes nothing.
  - A build goes into a hidden directory beside the cache and is renamed into place only when complete; a build
    that was killed leaves only that hidden directory, which the next run removes and redoes.
  - Concurrent runs on one host wait for each other (a lock per rootfs).
  - Which definition a rootfs was built from is recorded beside it, in C(<cache_dir>/.kiosk-rootfs-<name>.json), owned
    by root and out of the reach of a guest that runs on the rootfs. A rootfs made by an older version, with the record
    inside it (C(/.kiosk-rootfs.json)), has it moved out on the next run, without a rebuild or a re-clone. A clone
    directory that exists with no record fails the task; it is never replaced.
  - Guest OS settings shared by every guest of this rootfs are applied after the build (systemd-networkd DHCP on
    eth0, the audio stack, a kiosk user in the C(audio) group).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - kiosk.lxc.attributes
options:
  method:
    description:
      - V(debootstrap) builds Debian from O(mirror) (a foreign O(arch) needs qemu-user-static with binfmt_misc).
      - V(image) unpacks an LXC image-server C(rootfs.tar.xz) from a local path or URL, checked against O(sha256).
      - V(distrobuilder) runs C(distrobuilder build-dir) with a definition file, where distrobuilder is installed.
      - V(clone) makes a guest's own rootfs from a base built by this module (O(src)), copy-on-write where the
        filesystem allows (C(cp --reflink=auto) on btrfs or XFS) and a full copy elsewhere (ext4), with its own
        O(hostname); RV(cow) says which it was.
        An existing clone is never replaced, even when its base was rebuilt since (RV(outdated) says so),
        because it holds the guest's state.
    type: str
    choices: [debootstrap, image, distrobuilder, clone]
    default: debootstrap
  name:
    description: Directory name under O(cache_dir); by default V(<release>-<arch>-<key>) from the definition.
    type: str
  cache_dir:
    description: Where rootfs directories are kept.
    type: path
    default: /var/lib/kiosk-lxc/rootfs
  release:
    description: Debian release for V(debootstrap).
    type: str
    default: bookworm
  arch:
    description: Debian architecture (V(amd64), V(arm64), V(armhf), V(i386)); by default the host's.
    type: str
  mirror:
    description: Debian mirror for V(debootstrap).
    type: str
    default: http://deb.debian.org/debian
  variant:
    description: debootstrap variant.
    type: str
    default: minbase
  packages:
    description: Extra Debian packages for V(debootstrap).
    type: list
    elements: str
    default: []
  src:
    description: For V(image), the C(rootfs.tar.xz) path or URL; for V(clone), the base rootfs directory.
    type: str
  hostname:
    description: For V(clone), the guest's host name; by default O(name).
    type: str
  idmap:
    description:
      - For V(clone), the guest's user namespace ids (from M(kiosk.lxc.subid)) - C(uid), C(gid) and C(count). Every
        owner in the clone is shifted by C(uid)/C(gid), in the hidden build directory before the clone appears, so the
        guest's root (host id C(uid)) owns its own files. An existing clone made for another idmap is an error.
    type: dict
  sha256:
    description: For V(image), the tarball's sha256; required.
    type: str
  definition:
    description: For V(distrobuilder), the definition file on the host.
    type: path
  audio:
    description: The guest's sound server.
    type: str
    choices: [none, pulseaudio, pipewire]
    default: none
  user:
    description: A kiosk user created in the C(audio) group; none when empty.
    type: str
    default: ""
  networkd:
    description: Configure systemd-networkd for DHCP on the guest's eth0.
    type: bool
    default: true
  pack:
    description:
      - Also pack the rootfs as C(<path>.tar.xz) (kept until the rootfs changes) and return its sha256, to ship it
        to other hosts and unpack it there with O(method=image).
    type: bool
    default: false
  state:
    description: V(absent) removes the rootfs of this definition.
    type: str
    choices: [present, absent]
    default: present
author:
  - kiosk.lxc contributors (@kiosk-lxc)
"""

EXAMPLES = r"""
- name: Debian bookworm for arm64 kiosks, with PulseAudio and a kiosk user
  kiosk.lxc.rootfs:
    release: bookworm
    arch: arm64
    audio: pulseaudio
    user: kiosk
    packages: [mpv]
  register: base

- name: An LXC image-server tarball, checked
  kiosk.lxc.rootfs:
    method: image
    src: /srv/images/debian-bookworm-arm64-rootfs.tar.xz
    sha256: 0d5f...e3
"""

RETURN = r"""
path:
  description: The rootfs directory.
  returned: always
  type: str
  sample: /var/lib/kiosk-lxc/rootfs/bookworm-arm64-3f1c0a9e12b4d5e6
key:
  description: The hash of the definition the rootfs is built from.
  returned: always
  type: str
tarball:
  description: With O(pack), the tarball's path.
  returned: when O(pack) is true and not in check mode
  type: str
tarball_sha256:
  description: With O(pack), the tarball's sha256.
  returned: when O(pack) is true and not in check mode
  type: str
outdated:
  description: For V(clone), true when the existing clone was made from another definition than asked now.
  returned: always
  type: bool
cow:
  description:
    - For V(clone), true when the clone shares its files' blocks with its base (copy-on-write reflinks, on btrfs or
      XFS with reflink, base and clone on one filesystem), so it takes disk space only for what the guest changes.
    - False when it is a full copy (ext4 and other filesystems without reflinks, or base and clone on different
      filesystems); every clone then takes the base's size again.
    - Null for other methods, for a clone not made yet (check mode), and for a clone made before this was recorded.
  returned: always
  type: bool
actions:
  description: What ran, or would run in check mode.
  returned: always
  type: list
  elements: str
housekeeping:
  description:
    - Bookkeeping that changes nothing of the rootfs and does not count as a change, done in a real run, listed in
      check mode too. Today one kind - a clone made by kiosk.lxc 0.1 kept its record inside itself, in the guest's
      reach; it is copied beside the clone, and only the copy counts from then on (the guest's root is left as it
      was).
  returned: always
  type: list
  elements: str
  version_added: 0.2.0
"""

import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url
from ansible_collections.kiosk.lxc.plugins.module_utils.common import text
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.rootfs import build


def main():
    module = AnsibleModule(
        argument_spec=dict(
            method=dict(type="str", default="debootstrap", choices=list(build.METHODS)),
            name=dict(type="str"),
            cache_dir=dict(type="path", default="/var/lib/kiosk-lxc/rootfs"),
            release=dict(type="str", default="bookworm"),
            arch=dict(type="str"),
            mirror=dict(type="str", default="http://deb.debian.org/debian"),
            variant=dict(type="str", default="minbase"),
            packages=dict(type="list", elements="str", default=[]),
            src=dict(type="str"),
            hostname=dict(type="str"),
            sha256=dict(type="str"),
            idmap=dict(type="dict"),
            definition=dict(type="path"),
            audio=dict(type="str", default="none", choices=list(build.AUDIO_STACKS)),
            user=dict(type="str", default=""),
            networkd=dict(type="bool", default=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            pack=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params

    def run(argv):
        rc, out, err = module.run_command(argv)
        if rc != 0:
            raise KioskError(f"rootfs: {' '.join(argv[:3])} failed (rc={rc}): {(err or out).strip()[-500:]}")

    def fetch(url, dest):
        with open_url(url, timeout=60) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out)

    try:
        text.check_params(module.params)  # every string may reach a file, a command or XML
        d = build.desired(p)
        plan = build.plan(p["cache_dir"], d, p["state"])
        if (plan["changed"] or plan["housekeeping"]) and not module.check_mode:
            # What the build found under its lock: another run may have built it meanwhile.
            plan = build.apply(p["cache_dir"], d, run, p["state"], fetch=fetch)
        packed = {}
        if p["pack"] and p["state"] == "present":
            pack_actions = build.plan_pack(plan["path"]) if not plan["changed"] else [f"pack {plan['path']}.tar.xz"]
            plan["actions"] += pack_actions
            plan["changed"] = plan["changed"] or bool(pack_actions)
            if not module.check_mode:
                tarball, sha = build.pack(plan["path"], run)
                packed = dict(tarball=tarball, tarball_sha256=sha)
    except KioskError as exc:
        module.fail_json(msg=exc.msg, **exc.details)
    outdated = plan["after"] is not None and plan["after"] != d["key"]
    made = build.read_manifest(plan["path"]) if d["method"] == "clone" else None
    result = dict(
        changed=plan["changed"],
        path=plan["path"],
        key=d["key"],
        actions=plan["actions"],
        housekeeping=plan["housekeeping"],
        outdated=outdated,
        cow=(made or {}).get("cow"),
        **packed,
    )
    if module._diff:
        result["diff"] = dict(
            before_header=plan["path"],
            after_header=plan["path"],
            before=f"definition: {plan['before']}\n" if plan["before"] else "",
            after=f"definition: {plan['after']}\n" if plan["after"] else "",
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
