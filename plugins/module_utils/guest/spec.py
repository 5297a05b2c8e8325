# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The guest module's options, and each guest entry checked into a Want before anything is touched.

Plain Python, no ansible imports. GUEST_OPTIONS is the argument spec of one
entry of `guests` (the module's `options:`); the guest role's
meta/argument_specs.yml describes `kiosk_guests` entries with the same
options (a unit test holds the two together). Ansible checks the types and
choices; `validate()` checks everything else (names, sizes, selectors, the
base rootfs, what a profile allows) and names the entry by its index:
`guests[2].memory: ...`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import spec as domainspec
from ansible_collections.kiosk.lxc.plugins.module_utils.guest import profiles
from ansible_collections.kiosk.lxc.plugins.module_utils.sound.plan import PROFILES as SOUND_PROFILES
from ansible_collections.kiosk.lxc.plugins.module_utils.sound.select import SELECTOR_KEYS, normalize_selector

STATES = ("running", "stopped", "absent")
MISSING = ("fail", "ignore")
KIOSK_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,253}")
BRIDGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,14}")
IPV4_RE = re.compile(r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}")
PKG_RE = re.compile(r"[a-z0-9][a-z0-9.+-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# One entry of `guests` (and of the role's kiosk_guests): the module's DOCUMENTATION mirrors it.
GUEST_OPTIONS = {
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "choices": list(STATES), "default": "running"},
    "profile": {"type": "str", "choices": list(profiles.CHOICES)},
    "memory": {"type": "raw"},
    "vcpu": {"type": "int"},
    "init": {"type": "str"},
    "autostart": {"type": "bool"},
    "packages": {"type": "list", "elements": "str", "default": []},
    "network": {
        "type": "dict",
        "options": {"bridge": {"type": "str"}, "ip": {"type": "str"}, "antispoof": {"type": "bool"}},
    },
    "sound": {
        "type": "dict",
        "options": {
            "cards": {
                "type": "list",
                "elements": "dict",
                "options": {k: {"type": "str"} for k in SELECTOR_KEYS},
            },
            "profile": {"type": "str", "choices": list(SOUND_PROFILES)},
            "missing": {"type": "str", "choices": list(MISSING), "default": "fail"},
        },
    },
}

# What a guest that does not say gets (the role fills these from its kiosk_guest_* variables).
DEFAULTS_OPTIONS = {
    "init": {"type": "str", "default": "/lib/systemd/systemd"},
    "memory": {"type": "raw", "default": "512MiB"},
    "vcpu": {"type": "int", "default": 1},
    "autostart": {"type": "bool", "default": True},
    "bridge": {"type": "str", "default": "lxcbr0"},
    "profile": {"type": "str", "choices": [p for p in profiles.CHOICES if p != "legacy"], "default": "confined"},
    "sound_profile": {"type": "str", "choices": list(SOUND_PROFILES), "default": "udev_data"},
}


@dataclass
class Want:
    """One guest entry, checked: what the user asked for (profile not yet resolved against the stored guest)."""

    index: int
    name: str
    state: str
    profile: str | None  # as given (an alias already mapped), None: not given
    memory: object
    vcpu: int
    init: str
    autostart: bool
    packages: list[str]
    bridge: str
    ip: str | None  # network.ip: the static lease, which the guest's port is bound to (guest.antispoof)
    sound: dict | None  # {cards (normalised selectors or None), profile (None: the profile's), missing}
    antispoof: bool | None = None  # network.antispoof: None keeps an already defined guest as it is
    warnings: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"guests[{self.index}]"


def guest_mac(value: str) -> str:
    """A stable locally administered MAC in libvirt's 52:54:00 prefix for `<kiosk>/<guest>`."""
    digest = hashlib.sha256(str(value).encode("utf-8")).hexdigest()
    return "52:54:00:" + ":".join(digest[i : i + 2] for i in (0, 2, 4))


def _text(where: str, value, pattern: re.Pattern, what: str) -> str:
    if not isinstance(value, str) or _CONTROL.search(value) or not pattern.fullmatch(value):
        raise KioskError(f"{where}: {value!r} is not {what}")
    return value


def validate_kiosk(kiosk) -> str:
    return _text("kiosk", kiosk, KIOSK_RE, "a kiosk name (letters, digits, '.', '_', '-')")


def _choice(where: str, value, choices) -> None:
    if value not in choices:
        raise KioskError(f"{where}: {value!r} is not one of {', '.join(choices)}")


def validate_defaults(defaults: dict) -> dict:
    """The module's `defaults`, checked (the module fills in what is left out)."""
    out = dict(defaults)
    domainspec.parse_memory("defaults", "memory", out["memory"])
    if isinstance(out["vcpu"], bool) or not isinstance(out["vcpu"], int) or out["vcpu"] < 1:
        raise KioskError(f"defaults.vcpu: {out['vcpu']!r} must be a whole number >= 1")
    if not isinstance(out["init"], str) or not out["init"].startswith("/") or _CONTROL.search(out["init"]):
        raise KioskError(f"defaults.init: {out['init']!r} must be an absolute path")
    _text("defaults.bridge", out["bridge"], BRIDGE_RE, "a bridge name (at most 15 characters)")
    _choice("defaults.profile", out["profile"], [p for p in profiles.CHOICES if p != "legacy"])
    _choice("defaults.sound_profile", out["sound_profile"], SOUND_PROFILES)
    name, note = profiles.canonical(out["profile"])
    out["profile"] = name
    out["warnings"] = [f"defaults.profile: {note}"] if note else []
    return out


def validate_entry(index: int, entry, defaults: dict) -> Want:
    """guests[index] checked into a Want; raises KioskError naming guests[index].<field>."""
    where = f"guests[{index}]"
    if not isinstance(entry, dict):
        raise KioskError(f"{where}: must be a dict with at least a name")
    unknown = sorted(set(entry) - set(GUEST_OPTIONS))
    if unknown:
        raise KioskError(f"{where}: unknown field(s) {', '.join(unknown)}; use {', '.join(GUEST_OPTIONS)}")
    name = entry.get("name")
    if not isinstance(name, str) or not domainspec.NAME_RE.fullmatch(name):
        raise KioskError(f"{where}.name: {name!r} is invalid: use letters, digits, '.', '_' and '-', at most 64")
    state = entry.get("state") or "running"
    _choice(f"{where}.state", state, STATES)
    warnings = []
    profile = entry.get("profile")
    if profile is not None:
        _choice(f"{where}.profile", profile, profiles.CHOICES)
        profile, note = profiles.canonical(profile)
        if note:
            warnings.append(f"{where}.profile: {note}")
    memory = entry.get("memory") if entry.get("memory") is not None else defaults["memory"]
    domainspec.parse_memory(name, f"{where}.memory", memory)  # raises naming the field
    vcpu = entry.get("vcpu") if entry.get("vcpu") is not None else defaults["vcpu"]
    if isinstance(vcpu, bool) or not isinstance(vcpu, int) or vcpu < 1:
        raise KioskError(f"{where}.vcpu: {vcpu!r} must be a whole number >= 1")
    init = entry.get("init") if entry.get("init") is not None else defaults["init"]
    if not isinstance(init, str) or not init.startswith("/") or _CONTROL.search(init):
        raise KioskError(f"{where}.init: {init!r} must be an absolute path in the guest")
    autostart = entry.get("autostart")
    if autostart is None:
        autostart = defaults["autostart"]
    if not isinstance(autostart, bool):
        raise KioskError(f"{where}.autostart: {autostart!r} must be true or false")
    packages = entry.get("packages") or []
    if not isinstance(packages, list):
        raise KioskError(f"{where}.packages: must be a list of Debian package names")
    for i, pkg in enumerate(packages):
        _text(f"{where}.packages[{i}]", pkg, PKG_RE, "a Debian package name")
    network = entry.get("network") or {}
    if not isinstance(network, dict):
        raise KioskError(f"{where}.network: must be a dict with bridge and/or ip")
    bridge = network.get("bridge") or defaults["bridge"]
    _text(f"{where}.network.bridge", bridge, BRIDGE_RE, "a bridge name (at most 15 characters)")
    if network.get("ip") is not None:
        _text(f"{where}.network.ip", network["ip"], IPV4_RE, "an IPv4 address")
    if network.get("antispoof") not in (None, True, False):
        raise KioskError(f"{where}.network.antispoof: must be true, false or omitted")
    sound = entry.get("sound")
    if sound is not None:
        sound = _validate_sound(f"{where}.sound", sound)
    return Want(
        index=index,
        name=name,
        state=state,
        profile=profile,
        memory=memory,
        vcpu=vcpu,
        init=init,
        autostart=autostart,
        packages=sorted(set(packages)),
        bridge=bridge,
        ip=network.get("ip"),
        antispoof=network.get("antispoof"),
        sound=sound,
        warnings=warnings,
    )


def _validate_sound(where: str, sound) -> dict:
    if not isinstance(sound, dict):
        raise KioskError(f"{where}: must be a dict with cards, profile and missing")
    unknown = sorted(set(sound) - {"cards", "profile", "missing"})
    if unknown:
        raise KioskError(f"{where}: unknown field(s) {', '.join(unknown)}; use cards, profile, missing")
    missing = sound.get("missing") or "fail"
    _choice(f"{where}.missing", missing, MISSING)
    if sound.get("profile") is not None:
        _choice(f"{where}.profile", sound["profile"], SOUND_PROFILES)
    cards = sound.get("cards")
    if cards is not None:
        if not isinstance(cards, list):
            raise KioskError(f"{where}.cards: must be a list of selectors")
        checked = []
        for i, sel in enumerate(cards):
            if not isinstance(sel, dict):
                raise KioskError(f"{where}.cards[{i}]: must be a dict of {', '.join(SELECTOR_KEYS)}")
            for key, value in sel.items():
                if isinstance(value, str) and _CONTROL.search(value):
                    raise KioskError(f"{where}.cards[{i}].{key}: holds a control character")
            try:
                checked.append(normalize_selector({k: v for k, v in sel.items() if v is not None}))
            except KioskError as exc:
                raise KioskError(exc.msg.replace("Option cards", f"{where}.cards[{i}]")) from exc
        cards = checked
    return {"cards": cards, "profile": sound.get("profile"), "missing": missing}


def validate(guests, defaults: dict) -> list[Want]:
    """Every entry checked, names unique; KioskError on the first bad one."""
    if not isinstance(guests, list):
        raise KioskError("guests: must be a list of guest entries")
    wants = [validate_entry(i, g, defaults) for i, g in enumerate(guests)]
    seen: dict[str, int] = {}
    for want in wants:
        if want.name in seen:
            raise KioskError(f"{want.where}.name: '{want.name}' is already guests[{seen[want.name]}]")
        seen[want.name] = want.index
    return wants
