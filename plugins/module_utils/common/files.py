# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one atomic file writer: a file is either the old one or the whole new one, even after a power cut.

A temporary file in the same directory (created O_EXCL|O_NOFOLLOW, so a
name planted there is never followed), its owner and mode set on the open
file, fsync, rename over the target (a link at the target is replaced, not
followed), fsync of the directory so the rename itself is on disk.

`write_at` works relative to a directory fd: common.guestfs resolves a
directory inside a guest's root without following links and hands its fd
here. `write_atomic` is the host-side form for paths the host owns.
"""

from __future__ import annotations

import contextlib
import os
import secrets

_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_at(dir_fd: int, name: str, content: str | bytes, *, mode: int = 0o644, uid: int = -1, gid: int = -1) -> None:
    """Replace `name` in the directory `dir_fd` with content, owner uid:gid (-1: unchanged) and mode."""
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"write_at: {name!r} is not a plain file name")
    data = content.encode("utf-8") if isinstance(content, str) else content
    tmp = f".{name}.kiosk-{secrets.token_hex(4)}"
    fd = os.open(tmp, _TMP_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if uid != -1 or gid != -1:
                os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)


def fsync_dir(path: str) -> None:
    """Put a directory's entries (a rename into it, say) on disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: str, content: str | bytes, *, mode: int | None = 0o644, uid: int = -1, gid: int = -1, dir_mode: int = 0o755
) -> None:
    """Replace the host file `path` atomically; mode None keeps the current file's mode (0644 for a new one).

    Missing parent directories are made with dir_mode.
    """
    parent = os.path.dirname(path) or "."
    os.makedirs(parent, mode=dir_mode, exist_ok=True)
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        write_at(dir_fd, os.path.basename(path), content, mode=mode, uid=uid, gid=gid)
    finally:
        os.close(dir_fd)
