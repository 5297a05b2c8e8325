# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""systemd-machined machines (systemd-nspawn, `machine:`): find them, and their rules on cgroup v2.

On cgroup v1 a machine's scope has a devices directory like any cgroup
(seed 001: /sys/fs/cgroup/devices/machine.slice/machine-rim.scope), so the v1
backend is used on it. On cgroup v2 the device program is systemd's, fed from
the scope's DeviceAllow= property, so the rules go through
`systemctl set-property --runtime <scope> DeviceAllow=...` (lost when the
machine stops, like the v1 writes).

DeviceAllow entries are `char-<name> <access>` (a /proc/devices name: every
minor of those majors), `block-<name>`, `/dev/char/M:N`, `/dev/block/M:N` or a
device node path. There is no way to take one entry away, so a deny writes the
whole list again after an empty assignment, which resets it.

No systemd runs on this project's CI host: this is unit-tested with a
recorded `systemctl`/`machinectl` (tests/unit/cgroup); the kiosk VM scenario
runs it for real.
"""

from __future__ import annotations

import os
import stat

from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup.rules import TYPES, Rule, norm_access, v1_key
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError


def machine_show(name: str, run) -> dict[str, str]:
    """Leader and Unit of a machine; run(argv) -> (rc, stdout, stderr)."""
    rc, out, err = run(["machinectl", "show", name, "--property=Leader", "--property=Unit"])
    if rc != 0:
        raise KioskError(f"Machine '{name}': machinectl does not know it: {(err or out).strip()}")
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    if not props.get("Leader", "").isdigit() or not props.get("Unit"):
        raise KioskError(f"Machine '{name}': machinectl gave no leader pid or unit")
    return props


def _names(majors, kind: str) -> dict[int, str]:
    return {m: name for name, nums in majors.get(kind, {}).items() for m in nums}


def entry_to_rules(entry: str, majors) -> list[Rule]:
    """Rules for one DeviceAllow entry; entries naming no device node (yet) give none."""
    spec, _sep, access = entry.strip().partition(" ")
    access = norm_access(access or "rwm")
    for dtype, kind in TYPES.items():
        if spec.startswith(f"{kind}-"):
            return [Rule(dtype, m, None, access) for m in majors.get(kind, {}).get(spec[len(kind) + 1 :], [])]
        if spec.startswith(f"/dev/{kind}/"):
            major, _colon, minor = spec[len(kind) + 6 :].partition(":")
            return [Rule(dtype, int(major), int(minor), access)]
    try:
        st = os.stat(spec)
    except OSError:
        return []
    dtype = "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else None
    return [Rule(dtype, os.major(st.st_rdev), os.minor(st.st_rdev), access)] if dtype else []


def rule_to_entry(rule: Rule, majors) -> str:
    kind = TYPES[rule.type]
    if rule.major is None:
        raise KioskError(f"rules: rule '{rule}': a systemd machine's DeviceAllow cannot take a wildcard major")
    if rule.minor is None:
        name = _names(majors, kind).get(rule.major)
        if name is None:
            raise KioskError(f"rules: rule '{rule}': major {rule.major} has no name in /proc/devices for DeviceAllow")
        return f"{kind}-{name} {rule.access}"
    return f"/dev/{kind}/{rule.major}:{rule.minor} {rule.access}"


class SystemdDevices:
    """DeviceAllow= of a machine's scope unit (cgroup v2)."""

    version = "v2"
    key = staticmethod(v1_key)

    def __init__(self, unit: str, run, majors):
        self.path = unit
        self.run = run
        self.majors = majors

    def _entries(self) -> list[str]:
        rc, out, err = self.run(["systemctl", "show", "--property=DeviceAllow", "--value", self.path])
        if rc != 0:
            raise KioskError(f"Unit {self.path}: systemctl show failed: {(err or out).strip()}")
        # systemctl prints the entries separated by ", " or one per line depending on its version.
        return [e.strip() for e in out.replace("\n", ",").split(",") if e.strip()]

    def read(self) -> list[Rule]:
        return [rule for entry in self._entries() for rule in entry_to_rules(entry, self.majors)]

    def _set(self, *assignments: str) -> None:
        argv = ["systemctl", "set-property", "--runtime", self.path, *assignments]
        rc, out, err = self.run(argv)
        if rc != 0:
            raise KioskError(f"Unit {self.path}: {' '.join(argv)} failed: {(err or out).strip()}")

    def allow(self, rule: Rule) -> None:
        self._set(f"DeviceAllow={rule_to_entry(rule, self.majors)}")

    def deny(self, rule: Rule) -> None:
        kept = []
        for entry in self._entries():
            found = entry_to_rules(entry, self.majors)
            if any(v1_key(r) == v1_key(rule) for r in found):
                left = norm_access(set(found[0].access) - set(rule.access))
                if left:
                    kept.append(f"{entry.split()[0]} {left}")
            else:
                kept.append(entry)
        self._set("DeviceAllow=", *(f"DeviceAllow={e}" for e in kept))
