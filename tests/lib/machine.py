"""What a test session leaves on the machine: a snapshot before, a comparison after.

Tests must clean up what they add (guests, bridges, namespaces, /etc/subuid lines, binfmt_misc
entries, daemons). The conftest takes a snapshot when the session starts and compares it with the
machine when it ends; anything added or removed fails the session, naming it. Caches the suite
keeps on purpose are not state: /var/lib/kiosk-lxc/rootfs (bases, reused by definition) and the
kiosk VM image cache.
"""

from __future__ import annotations

import os
from pathlib import Path

FILES = ("/etc/subuid", "/etc/subgid", "/etc/passwd", "/etc/group")
DIRS = ("/etc/libvirt/lxc", "/etc/libvirt/hooks", "/etc/libvirt/hooks/lxc.d", "/var/lib/kiosk-lxc",
        "/var/lib/kiosk-lxc/guests", "/run/netns", "/sys/class/net", "/usr/local/lib/kiosk-lxc")  # fmt: skip
CACHES = {"/var/lib/kiosk-lxc/rootfs"}
# Long-lived daemons a test may start (the hotplug agent's comm is cut to 15 characters).
DAEMONS = {"libvirtd", "virtlogd", "dnsmasq", "kiosk-lxc-hotpl"}
BINFMT = "/proc/sys/fs/binfmt_misc"


def _lines(path: str) -> frozenset[str]:
    try:
        return frozenset(Path(path).read_text().splitlines())
    except OSError:
        return frozenset()


def _entries(path: str) -> frozenset[str]:
    try:
        return frozenset(os.path.join(path, e) for e in os.listdir(path)) - CACHES
    except OSError:
        return frozenset()


def _daemons() -> frozenset[str]:
    out = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if comm in DAEMONS and state != "Z":
            out.add(f"{comm} (pid {pid})")
    return frozenset(out)


def _mounts() -> frozenset[str]:
    return frozenset(line.split()[4] for line in _lines("/proc/self/mountinfo"))


def _binfmt() -> frozenset[str]:
    if not os.path.exists(f"{BINFMT}/status"):
        return frozenset()
    out = {f"{BINFMT} mounted"}
    for e in os.listdir(BINFMT):
        if e not in ("status", "register") and _lines(f"{BINFMT}/{e}") & {"enabled"}:
            out.add(f"{BINFMT}/{e} enabled")
    return frozenset(out)


def snapshot() -> dict[str, frozenset[str]]:
    snap = {f"line of {f}": _lines(f) for f in FILES}
    snap.update({f"entry in {d}": _entries(d) for d in DIRS})
    snap.update({"daemon": _daemons(), "mount point": _mounts(), "binfmt_misc": _binfmt()})
    return snap


def leftovers(before: dict[str, frozenset[str]], after: dict[str, frozenset[str]]) -> list[str]:
    """One line per thing added or removed between the two snapshots."""
    out = []
    for kind, was in before.items():
        now = after[kind]
        out += [f"added {kind}: {x}" for x in sorted(now - was)]
        # A daemon that ended is not a leftover (another session's VM, a libvirtd the machine's owner stopped).
        out += [f"removed {kind}: {x}" for x in sorted(was - now) if kind != "daemon"]
    return out
