# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Subordinate id ranges per guest, kept in /etc/subuid and /etc/subgid.

Plain Python, no ansible imports. read -> desired -> plan -> apply:

- `read(subuid, subgid)` parses both files (`owner:start:count` lines; other
  lines are kept as they are);
- `desired(params)` checks the options before anything is touched;
- `plan(files, want)` gives the owner the same range in both files: the one it
  already has, the `start` asked for, or the lowest free range at or above
  FIRST_ID that overlaps no entry of either file (another owner's range is
  never reused). One number for uid and gid keeps the guest's idmap simple;
- `apply(...)` rewrites each changed file atomically (temporary file in the
  same directory, fsync, rename), under an exclusive lock so two runs at once
  cannot pick the same range.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re

from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.common.files import write_atomic

FIRST_ID = 100000
MAX_ID = 2**32 - 2  # 4294967295 is (uid_t)-1
DEFAULT_COUNT = 65536
OWNER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
LINE_RE = re.compile(r"([^:\s]+):(\d+):(\d+)")


def desired(params: dict) -> dict:
    """The checked options: owner, count, start (None = allocate), state."""
    owner = params.get("name")
    if not isinstance(owner, str) or not OWNER_RE.fullmatch(owner):
        raise KioskError(f"name: {owner!r} is not a valid owner (letters, digits, '.', '_', '-'; 64 at most)")
    count = params.get("count", DEFAULT_COUNT)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_ID - FIRST_ID:
        raise KioskError(f"count: {count!r} must be a whole number between 1 and {MAX_ID - FIRST_ID}")
    start = params.get("start")
    if start is not None and (isinstance(start, bool) or not isinstance(start, int) or start < 1):
        raise KioskError(f"start: {start!r} must be a whole number >= 1 (0 is the host's root)")
    if start is not None and start + count - 1 > MAX_ID:
        raise KioskError(f"start: {start} + count {count} goes past the largest id {MAX_ID}")
    state = params.get("state") or "present"
    if state not in ("present", "absent"):
        raise KioskError(f"state: {state!r} is not one of present, absent")
    return {"owner": owner, "count": count, "start": start, "state": state}


def parse(text: str) -> list:
    """Lines of a subid file: (owner, start, count) tuples, other lines as str."""
    out = []
    for line in text.splitlines():
        match = LINE_RE.fullmatch(line.strip())
        out.append((match.group(1), int(match.group(2)), int(match.group(3))) if match else line)
    return out


def render(entries: list) -> str:
    return "".join((f"{e[0]}:{e[1]}:{e[2]}" if isinstance(e, tuple) else e) + "\n" for e in entries)


def read(*paths: str) -> dict:
    """{path: entries} for each file (a missing file has none)."""
    files = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as fh:
                files[path] = parse(fh.read())
        except FileNotFoundError:
            files[path] = []
    return files


def _ranges(files: dict, skip_owner: str) -> list[tuple[int, int, str]]:
    entries = [e for es in files.values() for e in es if isinstance(e, tuple) and e[0] != skip_owner]
    return sorted((e[1], e[1] + e[2], e[0]) for e in entries)


def _overlap(taken, start: int, count: int):
    return next((t for t in taken if start < t[1] and t[0] < start + count), None)


def _lowest_free(taken, count: int) -> int:
    start = FIRST_ID
    for lo, hi, _owner in taken:
        if start + count <= lo:
            break
        start = max(start, hi)
    if start + count - 1 > MAX_ID:
        raise KioskError(f"count: no free range of {count} ids is left in /etc/subuid and /etc/subgid")
    return start


def plan(files: dict, want: dict) -> dict:
    """{changed, actions, start, count, new: {path: entries}, before, after}."""
    owner = want["owner"]
    mine = {p: [e for e in entries if isinstance(e, tuple) and e[0] == owner] for p, entries in files.items()}
    before = {p: [f"{e[1]}:{e[2]}" for e in m] for p, m in mine.items()}
    if want["state"] == "absent":
        new = {p: [e for e in entries if not (isinstance(e, tuple) and e[0] == owner)] for p, entries in files.items()}
        start = count = None
    else:
        taken = _ranges(files, owner)
        ours = [e for m in mine.values() for e in m]
        count = want["count"]
        if want["start"] is not None:
            start = want["start"]
        elif ours and len({(e[1], e[2]) for e in ours}) == 1 and ours[0][2] == count and len(ours) == len(files):
            start = ours[0][1]
        else:
            start = _lowest_free(taken, count)
        clash = _overlap(taken, start, count)
        if clash:
            raise KioskError(
                f"start: {start}-{start + count - 1} for '{owner}' overlaps the range {clash[0]}-{clash[1] - 1}"
                f" of '{clash[2]}'"
            )
        new = {}
        for path, entries in files.items():
            kept = [e for e in entries if not (isinstance(e, tuple) and e[0] == owner)]
            if mine[path] == [(owner, start, count)]:
                new[path] = entries  # unchanged, in place
            else:
                new[path] = [*kept, (owner, start, count)]
    actions = [f"write {p}" for p in files if new[p] != files[p]]
    after = {p: [f"{e[1]}:{e[2]}" for e in new[p] if isinstance(e, tuple) and e[0] == owner] for p in files}
    return {
        "changed": bool(actions),
        "actions": actions,
        "start": start,
        "count": count,
        "new": new,
        "before": before,
        "after": after,
    }


@contextlib.contextmanager
def locked(lock_path: str):
    """An exclusive lock: two runs cannot allocate the same range."""
    with open(lock_path, "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure(params: dict, *, check_mode: bool = False, subuid="/etc/subuid", subgid="/etc/subgid") -> dict:
    """The whole run: validate, then read and plan (and apply) under the lock."""
    want = desired(params)
    lock = os.path.join(os.path.dirname(subuid) or ".", ".kiosk-subid.lock")
    with locked(lock):
        files = read(subuid, subgid)
        p = plan(files, want)
        if p["changed"] and not check_mode:
            for path in (subuid, subgid):
                if p["new"][path] != files[path]:
                    write_atomic(path, render(p["new"][path]), mode=None)
    return {
        "changed": p["changed"],
        "actions": p["actions"],
        "start": p["start"],
        "count": p["count"],
        "diff": [
            {
                "before_header": path,
                "after_header": path,
                "before": "".join(f"{want['owner']}:{r}\n" for r in p["before"][path]),
                "after": "".join(f"{want['owner']}:{r}\n" for r in p["after"][path]),
            }
            for path in (subuid, subgid)
        ],
    }
