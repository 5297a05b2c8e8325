# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way host-side code touches a path under a guest's root: never following what the guest planted.

Everything under a guest's rootfs, its /dev and its /proc/<pid>/root is
the guest root's to change. A host-side open of `<root>/etc/x` follows an
absolute link the guest made there against the *host's* /, so host root
would read, write, chown or unlink host files. Here every component is
resolved with openat2(2) and RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS |
RESOLVE_NO_MAGICLINKS relative to a directory fd of the root: a symlink
anywhere in the path is refused (ELOOP), `..` cannot climb out, and the
operation itself then works on the returned directory fd (mknodat,
unlinkat, the atomic writer of common.files), so nothing is resolved by
name twice. A file is opened as O_PATH first and read only when it is a
regular file (a planted FIFO or device node is never opened).

openat2 came with Linux 5.6. Without it (ENOSYS) the operation is refused;
it never falls back to following links. Python has no os.openat2, so it is
called through ctypes (syscall 437 on every architecture of the new table:
x86_64, aarch64, arm, i386).

Plain Python, no ansible imports.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import stat

from ansible_collections.kiosk.lxc.plugins.module_utils.common import files
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

SYS_OPENAT2 = 437
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
# Mount points inside the guest (its /dev tmpfs, a bind) are crossed: they are the guest's own.
RESOLVE_GUEST = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
# No O_NOFOLLOW: with it a final link opens as itself (O_PATH) or gives ENOTDIR; RESOLVE_NO_SYMLINKS gives ELOOP.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class GuestPathError(KioskError):
    """A path under a guest's root that is not what host-side code may touch (a link, a wrong type, no openat2)."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


@functools.lru_cache(maxsize=1)
def _syscall():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc.syscall


def openat2(dir_fd: int, path: str, flags: int, mode: int = 0, resolve: int = RESOLVE_GUEST) -> int:
    """openat2(2): a new fd, or OSError with the kernel's errno (EAGAIN, seen under a rename race, retried)."""
    how = _OpenHow(flags, mode, resolve)
    raw = os.fsencode(path)
    for _attempt in range(8):
        fd = _syscall()(
            ctypes.c_long(SYS_OPENAT2),
            ctypes.c_int(dir_fd),
            ctypes.c_char_p(raw),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            break
    raise OSError(err, os.strerror(err), path)


def _parts(rel: str) -> list[str]:
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"{rel!r} is not a relative path without '..'")
    return parts


def _refusal(shown: str, exc: OSError) -> GuestPathError:
    if exc.errno == errno.ENOSYS:
        reason = "this kernel has no openat2 (Linux 5.6), and a guest's path is never resolved without it"
    elif exc.errno == errno.ELOOP:
        reason = "it or a directory on the way is a symbolic link, which the guest may have planted"
    elif exc.errno == errno.ENOTDIR:
        reason = "a directory on the way is not a directory"
    else:
        reason = exc.strerror or str(exc)
    return GuestPathError(f"{shown}: {reason}; refused", path=shown)


@contextlib.contextmanager
def root_fd(root: str):
    """A directory fd of the guest's root (root is the host's own name for it, e.g. /proc/<pid>/root)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def open_dir(
    rootfd: int, rel: str, *, create: bool = False, mode: int = 0o755, uid: int = -1, gid: int = -1, shown: str = ""
) -> int | None:
    """An fd of the directory rel under the root; None when it is missing and create is false.

    With create, missing directories are made with mode and owner uid:gid.
    A link or a non-directory on the way raises GuestPathError (one line,
    naming `shown`, the path as the user knows it).
    """
    shown = shown or rel
    cur = os.dup(rootfd)
    try:
        for part in _parts(rel):
            try:
                nxt = openat2(cur, part, _DIR_FLAGS)
            except FileNotFoundError:
                if not create:
                    return None
                try:
                    os.mkdir(part, mode, dir_fd=cur)
                    made = True
                except FileExistsError:  # made meanwhile, or a dangling link: openat2 below decides
                    made = False
                try:
                    nxt = openat2(cur, part, _DIR_FLAGS)
                except OSError as exc:
                    raise _refusal(shown, exc) from exc
                if made:
                    if uid != -1 or gid != -1:
                        os.fchown(nxt, uid, gid)
                    os.fchmod(nxt, mode)
            except OSError as exc:
                raise _refusal(shown, exc) from exc
            os.close(cur)
            cur = nxt
        result, cur = cur, -1
        return result
    finally:
        if cur != -1:
            os.close(cur)


def _split(rel: str) -> tuple[str, str]:
    parts = _parts(rel)
    return "/".join(parts[:-1]), parts[-1]


def read_at(dir_fd: int, name: str, shown: str) -> str | None:
    """The text of the regular file `name` in dir_fd, None when missing; a link, FIFO or node is refused."""
    try:
        path_fd = openat2(dir_fd, name, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _refusal(shown, exc) from exc
    try:
        if not stat.S_ISREG(os.fstat(path_fd).st_mode):
            raise GuestPathError(f"{shown}: not a regular file; refused", path=shown)
        # Re-opened through the O_PATH fd itself: the very inode checked above.
        with open(f"/proc/self/fd/{path_fd}", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    finally:
        os.close(path_fd)


@contextlib.contextmanager
def _parent(root: str, rel: str, **create):
    """(an fd of rel's directory or None when missing, rel's last name, the path to show); create: open_dir's."""
    shown = os.path.join(root, rel)
    parent, name = _split(rel)
    with root_fd(root) as rfd:
        dfd = open_dir(rfd, parent, shown=shown, **create) if parent else os.dup(rfd)
        try:
            yield dfd, name, shown
        finally:
            if dfd is not None:
                os.close(dfd)


def read_file(root: str, rel: str) -> str | None:
    """The text of root/rel, None when it or a directory on the way is missing."""
    with _parent(root, rel) as (dfd, name, shown):
        return read_at(dfd, name, shown) if dfd is not None else None


def list_dir(root: str, rel: str) -> list[str] | None:
    """The names in the directory root/rel, sorted; None when it or a directory on the way is missing."""
    with root_fd(root) as rfd:
        dfd = open_dir(rfd, rel, shown=os.path.join(root, rel))
        if dfd is None:
            return None
        try:
            return sorted(os.listdir(dfd))
        finally:
            os.close(dfd)


def write_file(
    root: str,
    rel: str,
    content: str,
    *,
    mode: int = 0o644,
    uid: int = -1,
    gid: int = -1,
    dir_mode: int = 0o755,
    check_mode: bool = False,
    replace_link: bool = False,
) -> dict:
    """root/rel holding content (atomically, fsynced), directories made on the way (owner uid:gid, dir_mode).

    Returns {changed, before, after, path} for --diff; before is None for a
    new file. Check mode reads only. A file whose content is right but whose
    mode or owner differs is rewritten. A link at rel itself is refused, or
    with replace_link replaced by the file (the link is never followed).
    """
    create = {} if check_mode else {"create": True, "mode": dir_mode, "uid": uid, "gid": gid}
    with _parent(root, rel, **create) as (dfd, name, shown):
        if dfd is None:
            return {"changed": True, "before": None, "after": content, "path": shown}
        before = None if replace_link and _is_link(dfd, name) else read_at(dfd, name, shown)
        same = before == content and _owned(dfd, name, mode, uid, gid)
        if not same and not check_mode:
            files.write_at(dfd, name, content, mode=mode, uid=uid, gid=gid)
    return {"changed": not same, "before": before, "after": content, "path": shown}


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _owned(dir_fd: int, name: str, mode: int, uid: int, gid: int) -> bool:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    return stat.S_IMODE(st.st_mode) == mode and uid in (-1, st.st_uid) and gid in (-1, st.st_gid)


def remove_file(root: str, rel: str, *, check_mode: bool = False) -> str | None:
    """root/rel removed; its text before, None if missing. A link or a non-file there is refused, not followed."""
    with _parent(root, rel) as (dfd, name, shown):
        before = read_at(dfd, name, shown) if dfd is not None else None
        if before is not None and not check_mode:
            os.unlink(name, dir_fd=dfd)
            os.fsync(dfd)
        return before


def make_link(root: str, rel: str, target: str, *, replace: bool = False) -> bool:
    """A symlink root/rel -> target (the guest resolves it, never the host); whether one was made.

    An existing entry is kept, or with replace removed first (a link there
    is removed itself). Directories on the way are made (0755).
    """
    with _parent(root, rel, create=True) as (dfd, name, _shown):
        if _exists(dfd, name):
            if not replace:
                return False
            os.unlink(name, dir_fd=dfd)
        os.symlink(target, name, dir_fd=dfd)
        os.fsync(dfd)
        return True


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
