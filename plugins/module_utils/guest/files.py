# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The files the collection puts into a guest's own rootfs: planned (for check mode and --diff), then written.

Plain Python, no ansible imports. Every path is resolved inside the guest's
root by common.guestfs, which never follows a link the guest planted; the
files are written by common.files' atomic writer. A plan is read-only, so a
check run reads exactly what the real run will change.

- kiosk-sound-nodes.service (profile confined, with sound): libvirt makes
  each card node it passes into an idmapped guest owned by the guest's root,
  mode 0700, in a /dev/snd owned by no id of the guest, and systemd-tmpfiles
  refuses to touch that ("unsafe path transition"). This oneshot unit of the
  guest's own gives the nodes to its audio group at every boot, enabled by a
  link in sysinit.target.wants.
- the systemd-networkd drop-in of sound profile sysfs (with the host's /sys
  read-write in the guest networkd leaves every link pending).
- etc/tmpfiles.d/kiosk-sound.conf, written by kiosk.lxc 0.1 in place of the
  unit and refused by systemd-tmpfiles: removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from dataclasses import dataclass

from ansible_collections.kiosk.lxc.plugins.module_utils.common import guestfs
from ansible_collections.kiosk.lxc.plugins.module_utils.sound.plan import NETWORKD_DROPIN, NETWORKD_DROPIN_TEXT

SOUND_UNIT = "etc/systemd/system/kiosk-sound-nodes.service"
SOUND_UNIT_LINK = "etc/systemd/system/sysinit.target.wants/kiosk-sound-nodes.service"
SOUND_UNIT_LINK_TARGET = "../kiosk-sound-nodes.service"
OLD_TMPFILES = "etc/tmpfiles.d/kiosk-sound.conf"
SOUND_UNIT_TEXT = """\
# Written by kiosk.lxc (profile confined): the passed-in sound card nodes to the audio group.
[Unit]
Description=Give the passed-in sound card nodes to the audio group
DefaultDependencies=no
ConditionPathIsDirectory=/dev/snd
Before=sysinit.target sound.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'chgrp audio /dev/snd/* && chmod 0660 /dev/snd/*'

[Install]
WantedBy=sysinit.target
"""


@dataclass
class Change:
    """One file of the guest's that differs: kind write | link | remove, and its text before and after."""

    kind: str
    rel: str
    after: str | None  # file text, or the link's target
    before: str | None
    uid: int = -1
    gid: int = -1
    mode: int = 0o644

    def action(self, root: str) -> str:
        return f"{self.kind} {os.path.join(root, self.rel)}"

    def diff(self, root: str, guest: str) -> dict:
        path = os.path.join(root, self.rel)
        show = (lambda t: f"-> {t}\n" if t is not None else "") if self.kind == "link" else (lambda t: t or "")
        return {
            "before_header": f"{guest}: {path}",
            "after_header": f"{guest}: {path}",
            "before": show(self.before),
            "after": show(self.after) if self.kind != "remove" else "",
        }


def wanted(profile_name: str, sound: dict | None, sound_profile: str | None) -> dict[str, str | None]:
    """rel path -> the text it should hold (None: absent) for a guest of this profile and sound."""
    unit = profile_name == "confined" and sound is not None
    return {
        SOUND_UNIT: SOUND_UNIT_TEXT if unit else None,
        SOUND_UNIT_LINK: SOUND_UNIT_LINK_TARGET if unit else None,
        NETWORKD_DROPIN: NETWORKD_DROPIN_TEXT if sound is not None and sound_profile == "sysfs" else None,
        OLD_TMPFILES: None,
    }


def _read_link(root: str, rel: str) -> tuple[str | None, bool]:
    """(the link's target or None, whether something else than a link is there)."""
    parent, name = os.path.split(rel)
    with guestfs.root_fd(root) as rfd:
        dfd = guestfs.open_dir(rfd, parent, shown=os.path.join(root, rel))
        if dfd is None:
            return None, False
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                return os.readlink(name, dir_fd=dfd), False
            return None, True
        except FileNotFoundError:
            return None, False
        finally:
            os.close(dfd)


def _link_owned(root: str, rel: str, uid: int, gid: int) -> bool:
    parent, name = os.path.split(rel)
    with guestfs.root_fd(root) as rfd:
        dfd = guestfs.open_dir(rfd, parent, shown=os.path.join(root, rel))
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        finally:
            os.close(dfd)
    return uid in (-1, st.st_uid) and gid in (-1, st.st_gid)


def plan(root: str, want: dict[str, str | None], uid: int = -1, gid: int = -1) -> list[Change]:
    """The changes that bring root's files to `want`; reads only. root may be the base a clone will copy."""
    changes = []
    for rel, text in want.items():
        shown = os.path.join(root, rel)
        if rel == SOUND_UNIT_LINK:
            target, other = _read_link(root, rel)
            if other:
                raise guestfs.GuestPathError(f"{shown}: is not a symbolic link; refused")
            if text is None and target is not None:
                changes.append(Change("remove", rel, None, target))
            elif text is not None and (target != text or not _link_owned(root, rel, uid, gid)):
                changes.append(Change("link", rel, text, target, uid, gid))
            continue
        if text is None:
            before = guestfs.read_file(root, rel)
            if before is not None:
                changes.append(Change("remove", rel, None, before))
            continue
        probe = guestfs.write_file(root, rel, text, uid=uid, gid=gid, check_mode=True)
        if probe["changed"]:
            changes.append(Change("write", rel, text, probe["before"], uid, gid))
    return changes


def apply(root: str, changes: list[Change]) -> None:
    for change in changes:
        if change.kind == "write":
            guestfs.write_file(root, change.rel, change.after, mode=change.mode, uid=change.uid, gid=change.gid)
        elif change.kind == "remove" and change.rel == SOUND_UNIT_LINK:
            _unlink_link(root, change.rel)
        elif change.kind == "remove":
            guestfs.remove_file(root, change.rel)
        else:
            _write_link(root, change.rel, change.after, change.uid, change.gid)


def _unlink_link(root: str, rel: str) -> None:
    parent, name = os.path.split(rel)
    with guestfs.root_fd(root) as rfd:
        dfd = guestfs.open_dir(rfd, parent, shown=os.path.join(root, rel))
        if dfd is None:
            return
        try:
            if stat.S_ISLNK(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                os.unlink(name, dir_fd=dfd)
        except FileNotFoundError:
            pass
        finally:
            os.close(dfd)


def _write_link(root: str, rel: str, target: str, uid: int, gid: int) -> None:
    """rel a symbolic link to target, owned uid:gid, replaced in one rename; a non-link there is refused."""
    parent, name = os.path.split(rel)
    shown = os.path.join(root, rel)
    with guestfs.root_fd(root) as rfd:
        dfd = guestfs.open_dir(rfd, parent, create=True, uid=uid, gid=gid, shown=shown)
        try:
            with contextlib.suppress(FileNotFoundError):
                if not stat.S_ISLNK(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                    raise guestfs.GuestPathError(f"{shown}: is not a symbolic link; refused")
            tmp = f".{name}.kiosk-{secrets.token_hex(4)}"
            os.symlink(target, tmp, dir_fd=dfd)
            try:
                os.chown(tmp, uid, gid, dir_fd=dfd, follow_symlinks=False)
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except OSError as exc:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=dfd)
                if exc.errno == errno.EISDIR:
                    raise guestfs.GuestPathError(f"{shown}: is a directory; refused") from exc
                raise
            os.fsync(dfd)
        finally:
            os.close(dfd)
