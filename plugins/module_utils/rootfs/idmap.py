# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An idmapped clone: the clone's files owned by the guest's subordinate ids.

Plain Python, no ansible imports. A guest with a user namespace (libvirt
<idmap>: guest id 0..count-1 is host id uid..uid+count-1) sees a file owned
by host root as `nobody` and cannot write its own root filesystem. So the
rootfs module's clone method, given `idmap: {uid, gid, count}`, shifts every
owner in the copy by that offset (`shift()`), in the hidden build directory
before the rename, so the clone appears shifted in one step or not at all,
like every other build of that module.

chown() clears setuid/setgid bits and file capabilities; both are put back.
"""

from __future__ import annotations

import os
import stat

from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

MAX_ID = 2**32 - 2
CAPS_XATTR = "security.capability"


def validate(value) -> dict | None:
    """The checked `idmap` option ({uid, gid, count}) or None; KioskError naming the option."""
    if value is None or value == {}:
        return None
    if not isinstance(value, dict):
        raise KioskError("idmap: must be a dict with uid, gid and count")
    unknown = sorted(set(value) - {"uid", "gid", "count"})
    if unknown:
        raise KioskError(f"idmap: unknown keys {', '.join(unknown)} (use uid, gid, count)")
    out = {}
    for key in ("uid", "gid", "count"):
        number = value.get(key)
        if isinstance(number, str) and number.isdigit():
            number = int(number)
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise KioskError(f"idmap.{key}: {value.get(key)!r} must be a whole number >= 1")
        out[key] = number
    for key in ("uid", "gid"):
        if out[key] + out["count"] - 1 > MAX_ID:
            raise KioskError(f"idmap.{key}: {out[key]} + count {out['count']} goes past the largest id {MAX_ID}")
    return out


def _walk(root: str):
    """Every path under root (root included), each inode once (hard links)."""
    seen = set()
    stack = [root]
    while stack:
        path = stack.pop()
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        yield path, st
        if stat.S_ISDIR(st.st_mode):
            with os.scandir(path) as it:
                stack.extend(entry.path for entry in it)


def shift(root: str, idmap: dict) -> int:
    """Add idmap's offsets to every owner under root; returns how many inodes were changed."""
    count = 0
    for path, st in _walk(root):
        if st.st_uid >= idmap["count"] or st.st_gid >= idmap["count"]:
            raise KioskError(
                f"idmap.count: {path} is owned by {st.st_uid}:{st.st_gid}, outside the {idmap['count']} ids"
                " the guest maps"
            )
        link = stat.S_ISLNK(st.st_mode)
        caps = None
        if not link and stat.S_ISREG(st.st_mode):
            try:
                caps = os.getxattr(path, CAPS_XATTR, follow_symlinks=False)
            except OSError:
                caps = None
        os.lchown(path, idmap["uid"] + st.st_uid, idmap["gid"] + st.st_gid)
        if not link and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(path, stat.S_IMODE(st.st_mode))
        if caps is not None:
            os.setxattr(path, CAPS_XATTR, caps, follow_symlinks=False)
        count += 1
    return count
