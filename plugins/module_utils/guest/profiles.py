# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A guest's privilege profile: one table of what each profile puts in the guest's definition.

Plain Python, no ansible imports. docs/guest.md describes each profile.

- confined: a user namespace of the guest's own subordinate ids (its rootfs
  owned by them), libvirt's default capability policy plus nothing, its own
  network namespace, /sys read-only, sound through the host's udev data.
- privileged (called seed000 before; that name is still read, with a
  deprecation warning): UNSAFE, root in the guest is root on the host:
  every capability, no user namespace, and with sound the host's /sys
  read-write (sound profile sysfs), as seed 000's definition had it.
- legacy: a guest defined before profiles existed (its metadata records no
  profile). Its idmap, capabilities and private network are left exactly as
  they are, so adopting it changes nothing; nothing is recorded for it. Give
  the guest a profile to bring it under one.

A guest keeps the profile recorded in its metadata; its entry's `profile`
overrides that, and a new guest gets the default.
"""

from __future__ import annotations

from dataclasses import dataclass

from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError


@dataclass(frozen=True)
class Profile:
    name: str
    own_ids: bool  # a subordinate id range and an idmapped clone
    idmap: str  # "own" (the guest's range), "none" (no mapping), "keep" (as stored)
    capabilities: dict | None  # None: as stored
    privnet: bool | None  # None: as stored
    sound_profile: str | None  # None: the module's default sound profile
    sysfs_allowed: bool
    recorded: bool  # whether the profile's name goes into the guest's metadata


TABLE = {
    "confined": Profile(
        name="confined",
        own_ids=True,
        idmap="own",
        capabilities={"policy": "default", "add": [], "drop": []},
        privnet=True,
        sound_profile=None,
        sysfs_allowed=False,
        recorded=True,
    ),
    "privileged": Profile(
        name="privileged",
        own_ids=False,
        idmap="none",
        capabilities={"policy": "allow", "add": [], "drop": []},
        privnet=None,
        sound_profile="sysfs",
        sysfs_allowed=True,
        recorded=True,
    ),
    "legacy": Profile(
        name="legacy",
        own_ids=False,
        idmap="keep",
        capabilities=None,
        privnet=None,
        sound_profile=None,
        sysfs_allowed=True,
        recorded=False,
    ),
}
# Old names still read: name -> (profile, the warning a user gets when it is given).
ALIASES = {"seed000": "privileged"}
DEPRECATED = {"seed000": "profile 'seed000' is now called 'privileged'; the old name will be removed in 2.0.0"}
CHOICES = (*TABLE, *ALIASES)


def canonical(name: str) -> tuple[str, str | None]:
    """(the profile's name, a deprecation note or None) for a name a user gave."""
    if name in ALIASES:
        return ALIASES[name], DEPRECATED[name]
    if name not in TABLE:
        raise KioskError(f"profile: {name!r} is not one of {', '.join(CHOICES)}")
    return name, None


def resolve(given: str | None, stored_guest: bool, recorded: str | None, default: str) -> tuple[Profile, str | None]:
    """(the guest's Profile, the name its metadata records or None).

    given: the entry's profile (already canonical) or None; stored_guest:
    whether the guest is defined; recorded: the profile its metadata
    records (None: none); default: the module's default for new guests. A
    guest recorded under an old name keeps that record (so adopting it
    changes nothing); it reads as the profile the name stands for.
    """
    stored = ALIASES.get(recorded, recorded) if recorded else None
    if stored is not None and stored not in TABLE:
        stored = None
    if given is not None:
        name = given
    elif stored is not None:
        name = stored
    elif stored_guest:
        name = "legacy"
    else:
        name = default
    profile = TABLE[name]
    if not profile.recorded:
        return profile, None
    return profile, recorded if recorded and ALIASES.get(recorded) == name else name
