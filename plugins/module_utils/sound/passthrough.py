# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""sound_passthrough: read -> desired -> plan -> apply, through lxc_domain's edit_definition.

Plain Python, no ansible imports. The guest definition is changed only by
domain.manage.edit_definition (same normalised comparison, diff and restart
policy as lxc_domain); this module adds the one thing outside the
definition, the systemd-networkd drop-in of profile sysfs in the guest's
rootfs.
"""

from __future__ import annotations

import os

from ansible_collections.kiosk.lxc.plugins.module_utils.common import text
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.common.guestfs import GuestPathError
from ansible_collections.kiosk.lxc.plugins.module_utils.domain.manage import (
    edit_definition,
    read_guest,
)
from ansible_collections.kiosk.lxc.plugins.module_utils.domain.xmldef import etree
from ansible_collections.kiosk.lxc.plugins.module_utils.sound import discovery, plan, udevdata
from ansible_collections.kiosk.lxc.plugins.module_utils.sound.select import (
    card_selectors,
    choose,
    normalize_selector,
)

CHOICES = {
    "profile": plan.PROFILES,
    "missing": ("fail", "ignore"),
    "state": ("present", "absent"),
}
# Host directories: a relative one would be taken from wherever the module runs, and bound into the guest.
PATHS = ("host_dev_dir", "host_udev_dir", "udev_data_dir")


def validate(params: dict) -> dict:
    """The checked parameters (selectors normalised); KioskError before anything is touched."""
    for option, choices in CHOICES.items():
        if params[option] not in choices:
            raise KioskError(f"Option {option}: {params[option]!r} is not one of {', '.join(choices)}")
    for option in PATHS:
        if params.get(option) is not None and not str(params[option]).startswith("/"):
            raise KioskError(f"Option {option}: {text.quote(params[option])} is not an absolute path")
    checked = dict(params)
    if params.get("cards") is not None:
        checked["cards"] = [normalize_selector(s) for s in params["cards"]]
    return checked


def check_udev(params: dict, host: dict) -> bool:
    """Whether the host's udev data can be bound into the guest.

    Without it, profile udev_data cannot work for a chosen card: that fails
    here, before anything is touched. With no card chosen (missing: ignore)
    there is nothing to pass, and the guest simply gets no binds.
    """
    udev_dir = params.get("host_udev_dir") or "/run/udev"
    if params["state"] != "present" or params["profile"] != "udev_data" or os.path.isdir(udev_dir):
        return True
    if host["chosen"]:
        raise KioskError(
            f"Option profile: udev_data binds the host's udev data {udev_dir} into the guest,"
            " and it does not exist (is udev running on the host?)"
        )
    return False


def read(params: dict, context=None, proc_root: str = "/proc") -> dict:
    """The host's cards and which of them the selectors choose (nothing for state=absent)."""
    if params["state"] == "absent":
        return {"cards": [], "shared_nodes": [], "chosen": [], "unmatched": []}
    found = discovery.discover(context, proc_root=proc_root, dev_dir=params.get("host_dev_dir"), records=True)
    chosen = choose(found["cards"], params.get("cards"), params["missing"])
    return dict(found, chosen=chosen["cards"], unmatched=chosen["unmatched"])


def want(params: dict, host: dict, udev_available: bool = True) -> dict:
    return plan.desired(
        cards=host["chosen"],
        shared_nodes=host["shared_nodes"],
        selectors=params.get("cards"),
        profile=params["profile"],
        missing=params["missing"],
        state=params["state"],
        dev_dir=params.get("host_dev_dir") or "/dev",
        udev_dir=guest_udev_dir(params),
        udev_available=udev_available,
    )


def guest_udev_dir(params: dict) -> str:
    """The host directory bound as the guest's /run/udev: its own cards' udev records only (sound.udevdata)."""
    return udevdata.guest_dir(params.get("udev_data_dir") or udevdata.DEFAULT_ROOT, params["domain"])


def plan_udev(params: dict, host: dict, desired: dict) -> dict | None:
    """The change to the guest's own udev data: the chosen cards' records, none for state=absent."""
    binds = any(f["target"] == "/run/udev" for f in desired["filesystems"])
    records = udevdata.records(host["chosen"], host["shared_nodes"]) if binds else None
    return udevdata.plan(guest_udev_dir(params), records)


def _edit(conn, params: dict, desired: dict, check_mode: bool) -> dict:
    return edit_definition(
        conn,
        params["domain"],
        plan.make_mutate(desired),
        restart=params["restart"],
        shutdown_timeout=params["shutdown_timeout"],
        check_mode=check_mode,
    )


def ensure(conn, params: dict, *, check_mode: bool = False, context=None, proc_root="/proc") -> dict:
    """The whole run; returns the module's result (changed, actions, diff, cards, ...)."""
    params = validate(params)
    host = read(params, context, proc_root)
    udev_available = check_udev(params, host)
    if params["state"] == "absent" and read_guest(conn, params["domain"]).dom is None:
        return {
            "changed": False,
            "actions": [],
            "changes": [],
            "restarted": False,
            "restart_pending": False,
            "state": "absent",
            "cards": [],
            "unmatched": [],
            "nodes": [],
            "diff": [],
        }
    desired = want(params, host, udev_available)
    # A dry run first: it validates the edit and tells the guest's rootfs,
    # so the drop-in is in place before the guest restarts with /sys.
    dry = _edit(conn, params, desired, check_mode=True)
    rootfs = plan.guest_rootfs(etree.fromstring(dry["xml"])) if dry["xml"] else None
    if desired["dropin"] and rootfs is None:
        raise KioskError(
            f"Guest '{params['domain']}': profile sysfs writes a systemd-networkd drop-in into"
            " the guest's root filesystem, and the guest has none of its own"
        )
    try:
        dropin = plan.plan_dropin(rootfs, desired)
        udev = plan_udev(params, host, desired)
        if not check_mode:
            plan.apply_dropin(dropin)
            if udev is not None and not udev["drop"]:
                udevdata.apply(udev)  # before the edit: the guest's restart binds it
    except GuestPathError as exc:
        raise KioskError(f"Guest '{params['domain']}': {exc.msg}", **exc.details) from exc
    done = dry if check_mode else _edit(conn, params, desired, check_mode=False)
    if udev is not None and udev["drop"] and not check_mode:
        udevdata.apply(udev)  # after the edit: the guest no longer binds it
    actions = list(done["actions"])
    diffs = [done["diff"]] if done["actions"] else []
    if dropin is not None:
        verb = "remove" if dropin["content"] is None else "write"
        actions.insert(0, f"{verb} {dropin['path']}")
        diffs.append(
            {
                "before": dropin["before"] or "",
                "after": dropin["content"] or "",
                "before_header": dropin["path"],
                "after_header": dropin["path"],
            }
        )
    if udev is not None:  # in the order done: written before the edit, dropped after it
        actions.insert(len(actions) if udev["drop"] else 0, udevdata.describe(udev))
    return {
        "changed": bool(actions),
        "actions": actions,
        "changes": done["changes"],
        "restarted": done["restarted"],
        "restart_pending": done["restart_pending"],
        "state": done["state"],
        "cards": [dict(discovery.public(c), selectors=card_selectors(c)) for c in host["chosen"]],
        "unmatched": host["unmatched"],
        "nodes": desired["hostdevs"],
        "diff": diffs,
    }
