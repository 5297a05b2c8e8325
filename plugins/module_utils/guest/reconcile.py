# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""All of a kiosk's guests in one call: read -> desired -> one plan per guest -> apply -> wait.

Plain Python, no ansible imports. What each part of a guest needs is done by
the code that already does it, called from here:

- its subordinate ids (subid.ranges), for a profile with its own ids;
- on a host with cgroup v1's name=systemd hierarchy and no systemd, a cgroup
  of its own there, mounted over its /sys/fs/cgroup/systemd (libvirt would
  leave it in the hierarchy's root, shared with the host and every guest);
- its own rootfs, cloned from the base for its package set (rootfs.build,
  idmapped for its ids, never replaced behind its back);
- the files the collection puts into its rootfs (guest.files, through
  common.guestfs: no link the guest planted is followed);
- its definition: lxc_domain's fields, its port's anti-spoofing filter
  (guest.antispoof), the cgroup mount and its sound cards (sound.plan's
  mutate) applied to one copy of the stored definition, one comparison, at
  most one define (domain.manage);
- its run state, then its DHCP lease.

Each guest gets one Plan: its actions (what will run, in order), its diff
(ids, files, definition) and what apply needs. Check mode returns the plans;
a real run applies them, the guests side by side, and waits for every
lease within one overall timeout. A guest that fails is reported by name;
the others are still served.
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ansible_collections.kiosk.lxc.plugins.module_utils.common import procfs
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.common.virt import libvirt
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import info as domaininfo
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import manage, xmldef
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import spec as domainspec
from ansible_collections.kiosk.lxc.plugins.module_utils.domain.xmldef import etree
from ansible_collections.kiosk.lxc.plugins.module_utils.guest import antispoof, profiles
from ansible_collections.kiosk.lxc.plugins.module_utils.guest import files as guestfiles
from ansible_collections.kiosk.lxc.plugins.module_utils.guest import spec as guestspec
from ansible_collections.kiosk.lxc.plugins.module_utils.host import preflight
from ansible_collections.kiosk.lxc.plugins.module_utils.rootfs import build
from ansible_collections.kiosk.lxc.plugins.module_utils.sound import discovery, select, udevdata
from ansible_collections.kiosk.lxc.plugins.module_utils.sound import plan as soundplan
from ansible_collections.kiosk.lxc.plugins.module_utils.subid import ranges

CGROUP_TARGET = "/sys/fs/cgroup/systemd"


@dataclass
class Settings:
    """The module's options other than `guests`, checked."""

    kiosk: str
    defaults: dict
    bases: dict
    base_packages: list
    guest_dir: str = "/var/lib/kiosk-lxc/guests"
    subid_count: int = ranges.DEFAULT_COUNT
    systemd_cgroup_dir: str = "/sys/fs/cgroup/systemd/kiosk-lxc"
    network_wait: float = 120
    leases_dir: str = domaininfo.DEFAULT_LEASES_DIR
    shutdown_timeout: float = 30
    prune: bool = False
    subuid: str = "/etc/subuid"
    subgid: str = "/etc/subgid"
    host_dev_dir: str = "/dev"
    host_udev_dir: str = "/run/udev"
    udev_data_dir: str = udevdata.DEFAULT_ROOT


@dataclass
class Host:
    """What the host offers, read once per call (host.preflight is host_info's code)."""

    own_systemd_cgroup: bool
    sound: dict | None = None  # discovery result, read only when a guest has sound


@dataclass
class Plan:
    name: str
    where: str
    state: str
    profile: str | None = None
    rootfs: str | None = None
    actions: list = field(default_factory=list)
    housekeeping: list = field(default_factory=list)  # done in a real run, changes nothing of the guest
    diff: list = field(default_factory=list)
    cards: list = field(default_factory=list)
    ids: dict | None = None  # {start, count}
    subid_changed: bool = False
    cgroup_dirs: list = field(default_factory=list)  # (path, uid, gid, mode, what to do)
    clone: dict | None = None  # rootfs.build definition, when a clone is to be made
    files: list = field(default_factory=list)
    udev: dict | None = None  # sound.udevdata's change to the guest's own udev data
    domain: manage.Plan | None = None
    error: str | None = None
    interfaces: list = field(default_factory=list)  # (bridge, mac) of each interface its definition gets
    addresses: list = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.actions)


# ------------------------------------------------------------------ read


def read_host(mountinfo: str = procfs.MOUNTINFO, run_dir: str = preflight.RUN_DIR) -> Host:
    """Whether a guest with its own ids needs a name=systemd cgroup of its own (cgroup v1, no systemd)."""
    systemd = preflight.systemd_running(run_dir)
    try:
        layout = preflight.read_cgroup(mountinfo)
    except OSError:
        layout = {"v1_controllers": []}
    return Host(own_systemd_cgroup=not systemd and "name=systemd" in layout["v1_controllers"])


def read_sound(host: Host, settings: Settings, discover) -> dict:
    if host.sound is None:
        host.sound = discover(dev_dir=settings.host_dev_dir, records=True)
    return host.sound


def _stored_meta(guest: manage.Guest) -> tuple[dict, str | None]:
    """(lxc_domain's metadata items, the rootfs) of a defined guest."""
    if guest.xml is None:
        return {}, None
    info = xmldef.describe(xmldef.normalise(xmldef.parse(guest.xml, f"Guest '{guest.name}': stored definition")))
    roots = [m["source"] for m in info["mounts"] if m["target"] == "/"]
    return info["metadata"], roots[0] if roots else None


# ------------------------------------------------------------------ plan


def _base(want: guestspec.Want, settings: Settings) -> str:
    key = ",".join(sorted(set(want.packages) | set(settings.base_packages)))
    base = settings.bases.get(key)
    if not base:
        have = ", ".join(repr(k) for k in sorted(settings.bases)) or "none"
        raise KioskError(
            f"{want.where}.packages: no base rootfs was built for the package set {key!r} (built: {have});"
            " the rootfs role builds one per package set of kiosk_guests"
        )
    return base


def _subid(plan: Plan, want: guestspec.Want, settings: Settings, subid_files: dict) -> None:
    wanted = ranges.desired({"name": want.name, "count": settings.subid_count})
    p = ranges.plan(subid_files, wanted)
    plan.ids = {"start": p["start"], "count": p["count"]}
    plan.subid_changed = p["changed"]
    plan.actions += p["actions"]
    for path in (settings.subuid, settings.subgid):
        if p["before"][path] != p["after"][path]:
            plan.diff.append(
                {
                    "before_header": f"{want.name}: {path}",
                    "after_header": f"{want.name}: {path}",
                    "before": "".join(f"{want.name}:{r}\n" for r in p["before"][path]),
                    "after": "".join(f"{want.name}:{r}\n" for r in p["after"][path]),
                }
            )
    subid_files.update(p["new"])  # the next guest's range is planned after this one's


def _cgroup_dirs(plan: Plan, want: guestspec.Want, settings: Settings) -> None:
    uid = plan.ids["start"]
    for path, owner in ((settings.systemd_cgroup_dir, -1), (os.path.join(settings.systemd_cgroup_dir, want.name), uid)):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            plan.cgroup_dirs.append((path, owner, 0o755, "make"))
            plan.actions.append(f"make directory {path}")
            continue
        if not os.path.isdir(path) or os.path.islink(path):
            raise KioskError(f"Guest '{want.name}': {path} is not a directory")
        # The parent is made by root; libvirt re-owns the hierarchy root's direct children at each
        # confined guest's start (docs/least-privilege.md), so its owner is left as it is.
        if owner != -1 and (st.st_uid, st.st_gid) != (owner, owner):
            plan.cgroup_dirs.append((path, owner, 0o755, "chown"))
            plan.actions.append(f"chown {path} to {owner}:{owner}")


def _cgroup_mutate(source: str):
    def mutate(root) -> None:
        devices = xmldef.ensure_child(root, "devices")
        for fs in devices.findall("filesystem"):
            target = fs.find("target")
            if target is not None and os.path.normpath(target.get("dir") or "") == CGROUP_TARGET:
                src = fs.find("source")
                if src is None or src.get("dir") != source or fs.get("type", "mount") != "mount":
                    devices.remove(fs)
                    break
                for ro in fs.findall("readonly"):
                    fs.remove(ro)
                return
        fs = etree.Element("filesystem", type="mount")
        etree.SubElement(fs, "source", dir=source)
        etree.SubElement(fs, "target", dir=CGROUP_TARGET)
        same = devices.findall("filesystem")
        if same:
            same[-1].addnext(fs)
        else:
            devices.insert(0, fs)

    return mutate


def _sound(plan: Plan, want: guestspec.Want, profile: profiles.Profile, *, settings, host, discover) -> tuple:
    """(the sound profile, sound.plan's desired) for the guest; KioskError before anything is touched."""
    if want.sound is None:
        _plan_udev(plan, udevdata.guest_dir(settings.udev_data_dir, want.name), None)
        return None, soundplan.desired(cards=[], shared_nodes=[], selectors=None, state="absent")
    sound_profile = want.sound["profile"] or profile.sound_profile or settings.defaults["sound_profile"]
    if sound_profile == "sysfs" and not profile.sysfs_allowed:
        raise KioskError(
            f"{want.where}.sound.profile: sysfs passes the host /sys read-write, which profile"
            f" {profile.name} does not allow (use udev_data)"
        )
    found = read_sound(host, settings, discover)
    try:
        chosen = select.choose(found["cards"], want.sound["cards"], want.sound["missing"])
    except KioskError as exc:
        raise KioskError(f"{want.where}.sound.cards: {exc.msg}", **exc.details) from exc
    udev_available = True
    if sound_profile == "udev_data" and not os.path.isdir(settings.host_udev_dir):
        if chosen["cards"]:
            raise KioskError(
                f"{want.where}.sound.profile: udev_data binds the host's udev data {settings.host_udev_dir}"
                " into the guest, and it does not exist (is udev running on the host?)"
            )
        udev_available = False
    plan.cards = [dict(discovery.public(c), selectors=select.card_selectors(c)) for c in chosen["cards"]]
    udev_dir = udevdata.guest_dir(settings.udev_data_dir, want.name)
    desired = soundplan.desired(
        cards=chosen["cards"],
        shared_nodes=found["shared_nodes"],
        selectors=want.sound["cards"],
        profile=sound_profile,
        missing=want.sound["missing"],
        dev_dir=settings.host_dev_dir,
        udev_dir=udev_dir,
        udev_available=udev_available,
    )
    binds = any(f["target"] == "/run/udev" for f in desired["filesystems"])
    _plan_udev(plan, udev_dir, udevdata.records(chosen["cards"], found["shared_nodes"]) if binds else None)
    return sound_profile, desired


def _plan_udev(plan: Plan, directory: str, want: dict | None) -> None:
    plan.udev = udevdata.plan(directory, want)
    if plan.udev is not None:
        plan.actions.append(udevdata.describe(plan.udev))


def one_line(msg: str) -> str:
    """A message on one line (libvirt's own may span several)."""
    return " ".join(str(msg).split())


def plan_guest(conn, want: guestspec.Want, settings: Settings, *, host: Host, subid_files: dict, discover) -> Plan:
    """One guest's whole plan; raises KioskError (naming the guest) before anything is touched."""
    try:
        return _plan_guest(conn, want, settings, host=host, subid_files=subid_files, discover=discover)
    except KioskError as exc:
        if exc.msg.startswith((want.where, f"Guest '{want.name}'")):
            raise
        raise KioskError(f"Guest '{want.name}': {exc.msg}", **exc.details) from exc


def _plan_guest(conn, want: guestspec.Want, settings: Settings, *, host: Host, subid_files: dict, discover) -> Plan:
    guest = manage.read_guest(conn, want.name)
    meta, stored_rootfs = _stored_meta(guest)
    plan = Plan(name=want.name, where=want.where, state=want.state)
    if want.state == "absent":
        _plan_absent(plan, guest, meta)
        _plan_udev(plan, udevdata.guest_dir(settings.udev_data_dir, want.name), None)
        return plan
    profile, recorded = profiles.resolve(
        want.profile, guest.dom is not None, meta.get("profile"), settings.defaults["profile"]
    )
    if profile.name == "legacy" and guest.dom is None:
        raise KioskError(
            f"{want.where}.profile: legacy only adopts a guest defined before profiles existed; a new guest"
            " needs confined or privileged"
        )
    plan.profile = profile.name
    if stored_rootfs and not os.path.isdir(stored_rootfs):
        # A fresh clone would silently replace the guest's state: stop and say so.
        raise KioskError(
            f"Guest '{want.name}': its rootfs {stored_rootfs} is gone while the guest is defined with it;"
            " restore it, or remove the guest (undefine it) to provision it afresh"
        )
    sound_profile, sound_want = _sound(plan, want, profile, settings=settings, host=host, discover=discover)
    base = _base(want, settings)
    if profile.own_ids:
        _subid(plan, want, settings, subid_files)
    own_cgroup = profile.own_ids and host.own_systemd_cgroup
    if own_cgroup:
        _cgroup_dirs(plan, want, settings)
    idmap = {"uid": plan.ids["start"], "gid": plan.ids["start"], "count": plan.ids["count"]} if plan.ids else None
    clone = build.desired({"method": "clone", "src": base, "name": want.name, "idmap": idmap})
    clone_plan = build.plan(settings.guest_dir, clone)
    plan.rootfs = clone_plan["path"]
    plan.actions += clone_plan["actions"]
    plan.housekeeping += clone_plan["housekeeping"]
    if clone_plan["changed"] or clone_plan["housekeeping"]:
        plan.clone = clone
    # The files, read from the clone, or from the base it will be copied from.
    uid = plan.ids["start"] if plan.ids else -1
    read_root = plan.rootfs if os.path.isdir(plan.rootfs) else base
    plan.files = guestfiles.plan(read_root, guestfiles.wanted(profile.name, want.sound, sound_profile), uid, uid)
    for change in plan.files:
        plan.actions.append(change.action(plan.rootfs))
        plan.diff.append(change.diff(plan.rootfs, want.name))
    _plan_definition(
        plan, guest, want, settings, profile=profile, recorded=recorded, own_cgroup=own_cgroup, sound_want=sound_want
    )
    return plan


def _plan_definition(plan, guest, want, settings, *, profile, recorded, own_cgroup, sound_want) -> None:
    mac = guestspec.guest_mac(f"{settings.kiosk}/{want.name}")
    metadata = {"kiosk": settings.kiosk}
    if recorded:
        metadata["profile"] = recorded
    params = {
        "name": want.name,
        "init": want.init,
        "memory": want.memory,
        "vcpu": want.vcpu,
        "interfaces": [{"bridge": want.bridge, "mac": mac}],
        "metadata": metadata,
        "capabilities": profile.capabilities,
        "privnet": profile.privnet,
    }
    if profile.idmap == "own":
        ids = {"start": 0, "target": plan.ids["start"], "count": plan.ids["count"]}
        params["idmap"] = {"uid": ids, "gid": dict(ids)}
    elif profile.idmap == "none":
        params["idmap"] = {}
    plan.interfaces = [(i["bridge"], i["mac"]) for i in params["interfaces"]]
    domain = domainspec.validate(params, guest_keys=True)  # the one writer of the kiosk and profile keys
    domain.rootfs = plan.rootfs
    mutators = [lambda root: domainspec.apply_spec(root, domain)]
    mutators += _antispoof(guest, want, mac, antispoof.port_name(f"{settings.kiosk}/{want.name}"))
    if own_cgroup:
        mutators.append(_cgroup_mutate(os.path.join(settings.systemd_cgroup_dir, want.name)))
    mutators.append(soundplan.make_mutate(sound_want))

    def mutate(root) -> None:
        for m in mutators:
            m(root)

    plan.domain = manage.plan_guest(guest, mutate, state=want.state, restart="on_change", autostart=want.autostart)
    plan.actions += plan.domain.actions
    if plan.domain.define_xml:
        plan.diff.append(_definition_diff(plan.domain))


def _antispoof(guest: manage.Guest, want: guestspec.Want, mac: str, port: str) -> list:
    """The port filter's mutator: on for a new guest; a guest defined without one (before 0.3) keeps its definition.

    Adding the filter changes the definition, and the guest restarts to get it: an upgrade must not
    restart every guest of a fleet behind the operator's back, so it warns instead, until
    network.antispoof says true (add it, one restart) or false (no filter).
    """
    if want.antispoof is False:
        return [antispoof.remove_mutate(mac)]
    if want.antispoof is None and guest.xml is not None and not antispoof.has_filter(guest.xml, mac):
        want.warnings.append(
            f"{want.where} ({want.name}): its bridge port has no anti-spoofing filter (it was defined before"
            " kiosk.lxc had one), so it can send as another guest; set network.antispoof: true to add it"
            " (the guest restarts once), or false to keep it without and silence this"
        )
        return []
    return [antispoof.make_mutate(mac, want.ip, port)]


def _definition_diff(domain: manage.Plan) -> dict:
    return {
        "before_header": f"{domain.name} (stored definition)",
        "after_header": f"{domain.name} (stored definition)",
        "before": domain.before,
        "after": domain.after if domain.state_after != "absent" else "",
    }


def _plan_absent(plan: Plan, guest: manage.Guest, meta: dict) -> Plan:
    plan.domain = manage.plan_absent(guest)
    plan.profile = meta.get("profile")
    plan.actions += plan.domain.actions
    if plan.domain.actions:
        plan.diff.append(_definition_diff(plan.domain))
    return plan


def prune_candidates(conn, kiosk: str, listed: set[str]) -> list[str]:
    """Defined guests whose metadata names this kiosk and that `guests` does not list."""
    try:
        doms = conn.listAllDomains()
    except libvirt.libvirtError as exc:
        raise KioskError(f"Cannot list guests: {exc}") from exc
    out = []
    for dom in doms:
        name = dom.name()
        if name in listed:
            continue
        meta, _root = _stored_meta(manage.read_guest(conn, name))
        if meta.get("kiosk") == kiosk:
            out.append(name)
    return sorted(out)


def plan_all(conn, wants: list, settings: Settings, host: Host, discover) -> list[Plan]:
    """Every guest's plan (and, with prune, the removal of this kiosk's unlisted guests)."""
    subid_files = ranges.read(settings.subuid, settings.subgid)
    plans = [plan_guest(conn, w, settings, host=host, subid_files=subid_files, discover=discover) for w in wants]
    if settings.prune:
        for name in prune_candidates(conn, settings.kiosk, {w.name for w in wants}):
            guest = manage.read_guest(conn, name)
            meta, _root = _stored_meta(guest)
            plans.append(_plan_absent(Plan(name=name, where="prune", state="absent"), guest, meta))
    return plans


# ------------------------------------------------------------------ apply


def _make_dirs(plan: Plan) -> None:
    for path, owner, mode, what in plan.cgroup_dirs:
        if what == "make":
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, mode)
        if owner != -1:
            os.chown(path, owner, owner, follow_symlinks=False)


def _apply_one(conn, plan: Plan, settings: Settings, run) -> None:
    """Everything but the ids (applied before, in plan order) for one guest; KioskError on failure."""
    try:
        _make_dirs(plan)
        if plan.clone is not None:
            build.apply(settings.guest_dir, plan.clone, run)
        if plan.files:
            guestfiles.apply(plan.rootfs, plan.files)
        if plan.udev is not None and not plan.udev["drop"]:
            udevdata.apply(plan.udev)  # before the definition: the guest's (re)start binds it
    except OSError as exc:
        raise KioskError(f"Guest '{plan.name}': {exc}") from exc
    if plan.domain is not None and plan.domain.actions:
        manage.apply(conn, plan.domain, settings.shutdown_timeout)
    if plan.udev is not None and plan.udev["drop"]:
        try:
            udevdata.apply(plan.udev)  # after it: the guest no longer binds it
        except OSError as exc:
            raise KioskError(f"Guest '{plan.name}': {exc}") from exc


def apply_all(conn, plans: list[Plan], settings: Settings, run, workers: int = 4) -> None:
    """Apply every plan; a guest that fails gets plan.error, the others go on."""
    for plan in plans:
        if plan.subid_changed:
            got = ranges.ensure(
                {"name": plan.name, "count": plan.ids["count"]}, subuid=settings.subuid, subgid=settings.subgid
            )
            if got["start"] != plan.ids["start"]:
                plan.error = (
                    f"Guest '{plan.name}': its subordinate ids were planned at {plan.ids['start']} but"
                    f" {got['start']} was free when they were written (another run changed {settings.subuid})"
                )
    todo = [p for p in plans if p.error is None and (p.actions or p.housekeeping)]

    def one(plan: Plan) -> None:
        try:
            _apply_one(conn, plan, settings, run)
        except KioskError as exc:
            plan.error = one_line(exc.msg)

    if todo:
        with ThreadPoolExecutor(max(1, min(workers, len(todo)))) as pool:
            list(pool.map(one, todo))


def _ips(plan: Plan, settings: Settings, leases: dict) -> list[str]:
    """The guest's leased addresses: its MACs in its bridges' lease files (each file read once per round).

    The plan knows each interface's bridge and MAC (the module gives every guest its MAC), so no
    libvirt round trip is needed, and a no-op run pays one file read per bridge, not per guest.
    """
    out = []
    for bridge, mac in plan.interfaces:
        if bridge not in leases:
            leases[bridge] = domaininfo.read_leases(os.path.join(settings.leases_dir, f"{bridge}.leases"))
        out += [ip for ip in leases[bridge].get(mac.lower(), []) if ip not in out]
    return out


def wait_for_leases(plans: list[Plan], settings: Settings, wait: bool) -> None:
    """Each running guest's addresses; with wait, until every one has one or the overall timeout passed."""
    running = [p for p in plans if p.state == "running" and p.error is None]
    deadline = time.monotonic() + (settings.network_wait if wait else 0)
    pending = list(running)
    while True:
        leases: dict = {}
        for plan in list(pending):
            plan.addresses = _ips(plan, settings, leases)
            if plan.addresses:
                pending.remove(plan)
        if not pending or not wait or settings.network_wait <= 0 or time.monotonic() >= deadline:
            break
        time.sleep(1)
    if wait and settings.network_wait > 0:
        for plan in pending:
            plan.error = (
                f"Guest '{plan.name}': no DHCP lease within {settings.network_wait:g} s"
                f" (its bridge's leases are in {settings.leases_dir})"
            )


# ------------------------------------------------------------------ entry point


def result_of(plan: Plan) -> dict:
    return {
        "name": plan.name,
        "state": plan.state,
        "changed": plan.changed,
        "actions": list(plan.actions),
        "housekeeping": list(plan.housekeeping),
        "profile": plan.profile,
        "rootfs": plan.rootfs,
        "addresses": list(plan.addresses),
        "cards": [c.get("id") or "?" for c in plan.cards],
        "error": plan.error,
    }


def ensure(conn, guests, settings: Settings, *, run, discover, check_mode: bool = False, host: Host | None = None):
    """The module's whole run: {changed, guests: [...], report: {...}, diff: [...], warnings, failed: [...]}."""
    warnings = list(settings.defaults.get("warnings", []))
    wants = guestspec.validate(guests, settings.defaults)
    host = host or read_host()
    plans = plan_all(conn, wants, settings, host, discover)
    for want in wants:
        warnings += want.warnings
    if not check_mode:
        apply_all(conn, plans, settings, run)
    wait_for_leases(plans, settings, wait=not check_mode)
    results = [result_of(p) for p in plans]
    return {
        "changed": any(p.changed for p in plans),
        "guests": results,
        "report": {
            r["name"]: {"ips": r["addresses"], "cards": r["cards"], "rootfs": r["rootfs"], "profile": r["profile"]}
            for r in results
            if r["state"] != "absent"
        },
        "diff": [d for p in plans for d in p.diff],
        "warnings": warnings,
        "failed": [r["name"] for r in results if r["error"]],
        "errors": [r["error"] for r in results if r["error"]],
    }
