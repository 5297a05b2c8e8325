# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A clone's own identity: its machine-id and SSH host keys, made afresh when it is cloned.

Every clone of a base is a copy of it, /etc/machine-id and
/etc/ssh/ssh_host_*_key included. Two guests that share a host key cannot be
told apart by SSH host-key checking: a guest that takes over the other's
address (or a copy of the base's keys leaked from one guest) is trusted as
the other. So each clone gets, before it first boots:

- a new random /etc/machine-id (and /var/lib/dbus/machine-id, when the base
  has it as a file of its own rather than the usual link to /etc/machine-id);
- for each host key type the base has, a new key pair, made by the host's
  ssh-keygen in a private directory of the host's and written into the clone
  through common.guestfs (mode 0600, a link at the name replaced, never
  followed). The guest's own binaries are never run.

A base without them (no systemd, no openssh-server) gets nothing. Plain
Python, no ansible imports.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import tempfile

from ansible_collections.kiosk.lxc.plugins.module_utils.common import guestfs
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

MACHINE_IDS = ("etc/machine-id", "var/lib/dbus/machine-id")
SSH_DIR = "etc/ssh"
HOST_KEY_RE = re.compile(r"ssh_host_(rsa|ecdsa|ed25519|dsa)_key")


def _entry(root: str, rel: str) -> str | None:
    """ "link", "other" (a file, a directory...) or None (missing) for root/rel; nothing followed."""
    parent, name = os.path.split(rel)
    with guestfs.root_fd(root) as rfd:
        dfd = guestfs.open_dir(rfd, parent, shown=os.path.join(root, parent))
        if dfd is None:
            return None
        try:
            mode = os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return None
        finally:
            os.close(dfd)
    return "link" if stat.S_ISLNK(mode) else "other"


def host_key_types(root: str) -> list[str]:
    """The SSH host key types the rootfs has a private key for, sorted."""
    names = guestfs.list_dir(root, SSH_DIR) or []
    return sorted(m.group(1) for m in map(HOST_KEY_RE.fullmatch, names) if m)


def renew(root: str, hostname: str, run) -> list[str]:
    """A new machine-id and new SSH host keys in the clone at root; returns the paths (relative) written.

    run(argv) runs a host command and raises KioskError when it fails.
    """
    written = []
    machine_id = secrets.token_hex(16) + "\n"
    for rel in MACHINE_IDS:
        # The dbus copy is left alone when it is the link to /etc/machine-id that Debian makes.
        entry = _entry(root, rel)
        if entry is None or (entry == "link" and rel != MACHINE_IDS[0]):
            continue
        guestfs.write_file(root, rel, machine_id, mode=0o444, replace_link=True)
        written.append(rel)
    types = host_key_types(root)
    if not types:
        return written
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise KioskError(
            f"the base has SSH host keys ({', '.join(types)}), and a clone gets its own, made with ssh-keygen,"
            " which is not installed on this host (package openssh-client)"
        )
    tmp = tempfile.mkdtemp(prefix=".kiosk-hostkeys-")  # 0700, the host's own
    try:
        for kind in types:
            key = os.path.join(tmp, kind)
            run([keygen, "-q", "-t", kind, "-N", "", "-C", f"root@{hostname}", "-f", key])
            for suffix, mode in (("", 0o600), (".pub", 0o644)):
                with open(key + suffix, encoding="ascii") as fh:
                    rel = f"{SSH_DIR}/ssh_host_{kind}_key{suffix}"
                    guestfs.write_file(root, rel, fh.read(), mode=mode, replace_link=True)
                written.append(rel)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return written
