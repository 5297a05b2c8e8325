# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Device cgroup rules: parsing, major names, and the allow/deny algebra.

A rule is what `devices.allow` takes: `TYPE MAJOR:MINOR ACCESS`, e.g.
`c 116:* rw`. The user may name a major (`alsa`, `drm`, `input`); names are
resolved from /proc/devices on the host, never assumed. One name can stand
for several majors (the block driver `sd` has sixteen), so one spec may
resolve to several rules.

The algebra is the kernel's (cgroup v1, security/device_cgroup.c), and is
shared with the cgroup v2 BPF map (v2.py), which only differs in what makes
two entries "the same key":
- an open() is allowed when ONE entry covers the device and all the access
  it asks for, so a rule is "present" when one current entry covers it;
- writing to devices.allow merges the access into the entry with the same
  key, or appends a new entry;
- writing to devices.deny removes access from the entry with exactly that
  key (a wider wildcard entry is left alone) and drops it when none is left.

Plain Python, no ansible imports; the libvirt hook uses it too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ansible_collections.kiosk.lxc.plugins.module_utils.common import procfs
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

PROC_DEVICES = procfs.PROC_DEVICES
ACCESS_ORDER = "rwm"
TYPES = {"c": "char", "b": "block"}
MAX_MAJOR = (1 << 12) - 1
MAX_MINOR = (1 << 20) - 1
_RULE_RE = re.compile(r"\s*(\S+)\s+([^\s:]+):(\S+)\s+(\S+)\s*")
_NAME_RE = re.compile(r"[A-Za-z][\w./-]*")


def norm_access(letters: str) -> str:
    return "".join(ch for ch in ACCESS_ORDER if ch in letters)


class _RuleText:
    """Rule and RuleSpec print as devices.allow takes them: `TYPE MAJOR:MINOR ACCESS`, None as `*`."""

    def __str__(self) -> str:
        major = "*" if self.major is None else self.major
        minor = "*" if self.minor is None else self.minor
        return f"{self.type} {major}:{minor} {self.access}"


@dataclass(frozen=True)
class Rule(_RuleText):
    """A resolved rule. type is c, b or a (any); major/minor None is the wildcard."""

    type: str
    major: int | None
    minor: int | None
    access: str

    def with_access(self, access: str) -> Rule:
        return Rule(self.type, self.major, self.minor, norm_access(access))


@dataclass(frozen=True)
class RuleSpec(_RuleText):
    """A rule as the user gave it: major may still be a /proc/devices name."""

    type: str
    major: int | str | None
    minor: int | None
    access: str

    def resolve(self, majors: dict[str, dict[str, list[int]]]) -> list[Rule]:
        """The rules this spec stands for; majors is read_proc_devices()."""
        if not isinstance(self.major, str):
            return [Rule(self.type, self.major, self.minor, self.access)]
        found = majors.get(TYPES[self.type], {}).get(self.major)
        if not found:
            raise KioskError(
                f"rules: rule '{self}': major name '{self.major}' is not a {TYPES[self.type]} device "
                f"in {PROC_DEVICES} on this host (is its driver loaded?)"
            )
        return [Rule(self.type, m, self.minor, self.access) for m in found]


def read_proc_devices(path: str = PROC_DEVICES) -> dict[str, dict[str, list[int]]]:
    """{'char': {name: [major, ...]}, 'block': {...}} from /proc/devices (common/procfs.py's parse)."""
    return procfs.proc_devices(path)


def _number(text: str, what: str, limit: int, spec) -> int | None:
    if text == "*":
        return None
    if not text.isdigit() or int(text) > limit:
        raise KioskError(f"rules: rule '{spec}': {what} '{text}' is not a number from 0 to {limit} or '*'")
    return int(text)


def parse_spec(item, option: str = "rules") -> RuleSpec:
    """A RuleSpec from a devices.allow string or a {type, major, minor, access} dict."""
    if isinstance(item, str):
        match = _RULE_RE.fullmatch(item)
        if not match:
            raise KioskError(
                f"Option {option}: '{item}' is not a device rule like 'c 116:* rw' (TYPE MAJOR:MINOR ACCESS)"
            )
        dtype, major, minor, access = match.groups()
        shown = item.strip()
    elif isinstance(item, dict):
        unknown = sorted(set(item) - {"type", "major", "minor", "access"})
        if unknown:
            raise KioskError(f"Option {option}: rule {item!r} has unknown keys {', '.join(unknown)}")
        if item.get("major") is None or item.get("type") is None:
            raise KioskError(f"Option {option}: rule {item!r} needs both 'type' and 'major'")
        dtype = str(item["type"])
        major = str(item["major"])
        minor = str(item.get("minor", "*"))
        access = str(item.get("access", "rwm"))
        shown = f"{dtype} {major}:{minor} {access}"
    else:
        raise KioskError(f"Option {option}: {item!r} is neither a rule string nor a dict")
    if dtype == "a":
        raise KioskError(
            f"rules: rule '{shown}': type 'a' (every device) is not supported; name the char (c) or block (b) devices"
        )
    if dtype not in TYPES:
        raise KioskError(f"rules: rule '{shown}': device type '{dtype}' is unknown; use c (char) or b (block)")
    if not access or set(access) - set(ACCESS_ORDER):
        raise KioskError(f"rules: rule '{shown}': access '{access}' must be made of the letters r, w and m")
    if major == "*" or major.isdigit():
        major_value: int | str | None = _number(major, "major", MAX_MAJOR, shown)
    elif _NAME_RE.fullmatch(major):
        major_value = major
    else:
        raise KioskError(f"rules: rule '{shown}': major '{major}' is neither a number, '*' nor a device name")
    return RuleSpec(dtype, major_value, _number(minor, "minor", MAX_MINOR, shown), norm_access(access))


def parse_list_line(line: str) -> Rule:
    """One line of devices.list (type may be 'a'; numbers only)."""
    dtype, rest = line.split(None, 1)
    numbers, access = rest.split()
    major, minor = numbers.split(":")
    return Rule(
        dtype,
        None if major == "*" else int(major),
        None if minor == "*" else int(minor),
        norm_access(access),
    )


def _match(entry_value: int | None, rule_value: int | None) -> bool:
    return entry_value is None or entry_value == rule_value


def covers(entry: Rule, rule: Rule) -> bool:
    """True when entry alone allows every device and access of rule (the kernel's check)."""
    return (
        entry.type in ("a", rule.type)
        and _match(entry.major, rule.major)
        and _match(entry.minor, rule.minor)
        and set(rule.access) <= set(entry.access)
    )


def allows_everything(current: list[Rule]) -> bool:
    return any(e.type == "a" and e.major is None and e.minor is None and e.access == "rwm" for e in current)


def v1_key(rule: Rule):
    return (rule.type, rule.major, rule.minor)


def merge_wanted(wanted: list[Rule], key=v1_key) -> list[Rule]:
    """Rules with the same key folded into one, first-seen order kept."""
    merged: dict = {}
    for rule in wanted:
        old = merged.get(key(rule))
        merged[key(rule)] = rule if old is None else _union(old, rule)
    return list(merged.values())


def _union(old: Rule, new: Rule) -> Rule:
    dtype = old.type if old.type == new.type else "a"
    return Rule(dtype, old.major, old.minor, norm_access(old.access + new.access))


def plan_allow(current: list[Rule], wanted: list[Rule], key=v1_key) -> list[Rule]:
    """The rules to write to devices.allow so that each wanted rule is covered."""
    return [rule for rule in merge_wanted(wanted, key) if not any(covers(e, rule) for e in current)]


def plan_deny(current: list[Rule], wanted: list[Rule], key=v1_key) -> list[Rule]:
    """The rules to write to devices.deny: each wanted rule's access still on its exact key."""
    by_key = {key(e): e for e in current}
    writes = []
    for rule in merge_wanted(wanted, key):
        entry = by_key.get(key(rule))
        if entry is not None and set(entry.access) & set(rule.access):
            writes.append(rule.with_access(set(entry.access) & set(rule.access)))
    return writes


def after_allow(current: list[Rule], writes: list[Rule], key=v1_key) -> list[Rule]:
    """current once writes went to devices.allow (merge into the same key, else append)."""
    result = list(current)
    for rule in writes:
        for i, entry in enumerate(result):
            if key(entry) == key(rule):
                result[i] = _union(entry, rule)
                break
        else:
            result.append(rule)
    return result


def after_deny(current: list[Rule], writes: list[Rule], key=v1_key) -> list[Rule]:
    """current once writes went to devices.deny (exact key only; empty entries dropped)."""
    result = []
    for entry in current:
        access = set(entry.access)
        for rule in writes:
            if key(entry) == key(rule):
                access -= set(rule.access)
        if access:
            result.append(entry.with_access(access))
    return result


def still_covered(current: list[Rule], removed: list[Rule], key=v1_key) -> list[str]:
    """Warnings for rules removed on their own key that a wider entry still allows."""
    notes = []
    for rule in removed:
        wider = [e for e in current if key(e) != key(rule) and covers(e, rule)]
        if wider:
            notes.append(f"Rule '{rule}' was removed, but '{wider[0]}' still allows it")
    return notes
