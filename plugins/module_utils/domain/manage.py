# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Define, start, stop, restart and remove libvirt LXC guests: read -> plan -> apply.

Plain Python, no ansible imports. Two public entry points share one plan and
one apply:

- `ensure(conn, params, check_mode=False)`: what the kiosk.lxc.lxc_domain
  module does with its parameters.
- `edit_definition(conn, name, mutate, *, restart="on_change",
  shutdown_timeout=30, check_mode=False)`: for other modules (sound
  passthrough, device rules) that change part of an existing guest. A
  module that keeps read, plan and apply apart calls its two halves:
  `plan_edit(read_guest(conn, name), mutate, restart=...)` in its plan and
  `result(conn, plan, check_mode, shutdown_timeout)` in its apply.
  `mutate(root)` edits, in place, an lxml copy of the guest's stored
  (persistent) definition. The edit is normalised and compared with the stored
  definition field by field; the guest is redefined only when a field differs,
  and a running guest is then restarted when `restart` is "on_change" (with
  "never" the result says `restart_pending`). The guest's run state is kept.
  `mutate` must leave <metadata> children of namespaces it does not own as they
  are (common/namespaces.py).

Both return the same dict: changed, actions (what ran or, in check mode, would
run: define, start, stop, restart, resume, undefine, autostart_on,
autostart_off), state, uuid, xml (the stored definition after), changes (the
fields that differ), restarted, restart_pending and diff (before/after of the
normalised definition, with headers). Check mode returns the same plan
without applying it, so a check run and a real run cannot disagree.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ansible_collections.kiosk.lxc.plugins.module_utils.common import text
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.common.virt import LIBVIRT_IMPORT_ERROR, libvirt
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import spec as speclib
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import xmldef

STATE_NAMES = {
    0: "nostate",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutdown",
    5: "stopped",
    6: "crashed",
    7: "pmsuspended",
}
ACTIVE_STATES = ("running", "blocked", "paused", "shutdown", "pmsuspended")
SYS_CLASS_NET = "/sys/class/net"


def missing_libs() -> list[tuple[str, str]]:
    """(library, import error) for each third-party library this code lacks."""
    return [
        (lib, str(err))
        for lib, err in (
            ("libvirt-python", LIBVIRT_IMPORT_ERROR),
            ("lxml", xmldef.LXML_IMPORT_ERROR),
        )
        if err is not None
    ]


# ------------------------------------------------------------------ read


@dataclass
class Guest:
    """What libvirt has for one guest name (dom None when it is not defined)."""

    name: str
    dom: object = None
    xml: str | None = None  # stored (persistent) definition
    live_xml: str | None = None  # running definition, when active
    state: str = "absent"
    autostart: bool | None = None
    uuid: str | None = None
    persistent: bool = True

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


def read_guest(conn, name: str) -> Guest:
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return Guest(name=name)
        raise KioskError(f"Guest '{name}': cannot look it up: {exc}") from exc
    try:
        state = STATE_NAMES.get(dom.state()[0], "nostate")
        guest = Guest(
            name=name,
            dom=dom,
            xml=dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE),
            state=state,
            autostart=bool(dom.autostart()),
            uuid=dom.UUIDString(),
            persistent=bool(dom.isPersistent()),
        )
        if guest.active:
            guest.live_xml = dom.XMLDesc(0)
    except libvirt.libvirtError as exc:
        raise KioskError(f"Guest '{name}': cannot read it: {exc}") from exc
    return guest


# ------------------------------------------------------------------ plan


@dataclass
class Plan:
    name: str
    guest: Guest
    state_after: str
    actions: list[str] = field(default_factory=list)
    define_xml: str | None = None
    before: str = ""
    after: str = ""
    changes: list[str] = field(default_factory=list)
    restart_pending: bool = False


def plan_definition(guest: Guest, mutate) -> tuple[str | None, str, str, list[str]]:
    """(XML to define or None, before, after, changed fields) for mutate applied to guest.

    A guest that does not exist yet starts from spec.new_guest(). The edit
    inherits what libvirt generated (xmldef.inherit), then both sides are
    normalised and compared field by field.
    """
    current = xmldef.parse(guest.xml, f"Guest '{guest.name}': stored definition") if guest.xml else None
    desired = copy.deepcopy(current) if current is not None else speclib.new_guest(guest.name)
    mutate(desired)
    if desired.findtext("name") != guest.name:
        raise KioskError(f"Guest '{guest.name}': the edited definition names another guest")
    xmldef.inherit(desired, current)
    after = xmldef.normalise(desired)
    after_text = xmldef.to_text(after)
    if current is None:
        return xmldef.to_text(desired), "", after_text, ["(new guest)"]
    before = xmldef.normalise(current)
    changes = xmldef.diff_fields(before, after)
    define_xml = xmldef.to_text(desired) if changes else None
    return define_xml, xmldef.to_text(before), after_text, changes


def live_differs(guest: Guest) -> bool:
    """Whether the running guest runs something other than its stored definition."""
    if not guest.live_xml or not guest.xml:
        return False
    live = xmldef.describe(xmldef.normalise(xmldef.parse(guest.live_xml)))
    stored = xmldef.describe(xmldef.normalise(xmldef.parse(guest.xml)))
    return live != stored


def plan_guest(guest: Guest, mutate, *, state: str | None, restart: str, autostart: bool | None) -> Plan:
    """The whole plan: definition, run state (None = keep it), restart, autostart."""
    define_xml, before, after, changes = plan_definition(guest, mutate)
    plan = Plan(guest.name, guest, state_after="", define_xml=define_xml, before=before, after=after)
    plan.changes = changes if define_xml else []
    if define_xml:
        plan.actions.append("define")
    active = guest.active
    want = state if state in ("running", "stopped") else ("running" if active else "stopped")
    if want == "stopped" and active:
        plan.actions.append("stop")
    elif want == "running" and not active:
        plan.actions.append("start")
    elif want == "running":
        pending = bool(define_xml) or live_differs(guest)
        if pending and restart == "on_change":
            plan.actions.append("restart")
        elif guest.state == "paused" and state == "running":
            plan.actions.append("resume")
        plan.restart_pending = pending and restart != "on_change"
    if autostart is not None and autostart != bool(guest.autostart):
        plan.actions.append("autostart_on" if autostart else "autostart_off")
    moved = {"start", "stop", "restart", "resume"} & set(plan.actions)
    plan.state_after = "paused" if guest.state == "paused" and not moved else want
    return plan


def plan_absent(guest: Guest) -> Plan:
    plan = Plan(guest.name, guest, state_after="absent")
    if guest.dom is None:
        return plan
    if guest.active:
        plan.actions.append("stop")
    plan.actions.append("undefine")
    plan.before = xmldef.to_text(xmldef.normalise(xmldef.parse(guest.xml)))
    plan.changes = ["(guest removed)"]
    return plan


def _bridges(xml: str | None) -> list[str]:
    if not xml:
        return []
    root = xmldef.parse(xml)
    return [el.get("bridge") for el in root.iterfind("devices/interface[@type='bridge']/source") if el.get("bridge")]


def check_bridges(conn, plan: Plan, spec, sys_class_net: str = SYS_CLASS_NET) -> None:
    """Every bridge a new or changed definition adds exists on this host, before anything is defined.

    Only for a libvirt on this host (a URI without a host part): a remote kiosk's bridges are not
    in this host's /sys. Bridges the stored definition already names are left to libvirt.
    """
    if plan.define_xml is None or urlsplit(conn.getURI()).netloc:
        return
    known = set(_bridges(plan.guest.xml))
    for bridge in _bridges(plan.define_xml):
        if bridge in known or os.path.isdir(os.path.join(sys_class_net, bridge, "bridge")):
            continue
        if spec.interfaces is not None:
            index = next(i for i, e in enumerate(spec.interfaces) if e["type"] == "bridge" and e["source"] == bridge)
            option = f"interfaces[{index}].bridge"
        else:
            option = "xml" if spec.xml is not None else "interfaces"
        raise KioskError(
            f"Guest '{plan.name}': {option}: bridge {text.quote(bridge)} does not exist on this host"
            " (make it first, e.g. with kiosk.lxc.lxc_bridge)"
        )


# ------------------------------------------------------------------ apply


def _wait_inactive(dom, until: float) -> bool:
    while dom.isActive():
        if time.monotonic() >= until:
            return False
        time.sleep(0.1)
    return True


def stop(dom, timeout: float) -> bool:
    """Graceful shutdown within timeout seconds, else destroy; True when it was destroyed.

    First libvirt's default shutdown (the guest's initctl pipe, which systemd
    and sysvinit guests read, else SIGTERM to its init), for the first half of
    the timeout; then SIGTERM explicitly, for inits that only know signals
    (on libvirt 9.0 here the default mode did not signal a busybox init).
    """
    deadline = time.monotonic() + timeout
    for flags, until in ((0, time.monotonic() + timeout / 2), (libvirt.VIR_DOMAIN_SHUTDOWN_SIGNAL, deadline)):
        with contextlib.suppress(libvirt.libvirtError):  # no init to ask: next step
            dom.shutdownFlags(flags)
        if _wait_inactive(dom, until):
            return False
    try:
        dom.destroy()
    except libvirt.libvirtError:
        if dom.isActive():
            raise
    return True


def _failed(conn, what: str, exc) -> str:
    """What went wrong in `what`: libvirt's error, or that libvirtd went away during it.

    libvirt reports a daemon that died mid-call as a bare RPC error ("End of
    file while reading data: Input/output error"); whether the call took
    effect is known only once libvirtd is back, and a re-run finds out.
    """
    try:
        alive = bool(conn.isAlive())
    except (libvirt.libvirtError, AttributeError):
        alive = True
    if alive:
        return f"{what} failed: {text.escape(str(exc).strip())}"
    return f"libvirtd went away during {what} ({exc}); run again once libvirtd is back"


def apply(conn, plan: Plan, shutdown_timeout: float) -> dict:
    """Carry out plan.actions in order; returns facts about what happened."""
    dom = plan.guest.dom
    happened = {"destroyed": False}
    for action in plan.actions:
        try:
            if action == "define":
                dom = conn.defineXML(plan.define_xml)
            elif action == "start":
                dom.create()
            elif action in ("stop", "restart"):
                happened["destroyed"] |= stop(dom, shutdown_timeout)
                if action == "restart":
                    dom.create()
            elif action == "resume":
                dom.resume()
            elif action == "undefine":
                dom.undefine()
                dom = None
            elif action in ("autostart_on", "autostart_off"):
                dom.setAutostart(1 if action == "autostart_on" else 0)
        except libvirt.libvirtError as exc:
            msg = f"Guest '{plan.name}': {_failed(conn, action, exc)}"
            done = plan.actions[: plan.actions.index(action)]
            if action == "start" and done[:1] == ["define"] and plan.guest.dom is None:
                # A guest this run defined and could not start: not left half made.
                try:
                    dom.undefine()
                    msg += "; the new guest was undefined again"
                    done = []
                except libvirt.libvirtError as undo:
                    msg += f"; undefining the new guest failed too: {undo}"
            raise KioskError(msg, actions_done=done) from exc
    happened["dom"] = dom
    return happened


def result(conn, plan: Plan, check_mode: bool, shutdown_timeout: float) -> dict:
    """Apply the plan unless check_mode, and build the result dict."""
    out = {
        "changed": bool(plan.actions),
        "actions": list(plan.actions),
        "changes": plan.changes,
        "state": plan.state_after,
        "uuid": plan.guest.uuid,
        "restarted": "restart" in plan.actions,
        "restart_pending": plan.restart_pending,
        "xml": plan.after if plan.state_after != "absent" else "",
        "diff": {
            "before": plan.before,
            "after": plan.after if plan.state_after != "absent" else "",
            "before_header": f"{plan.name} (stored definition)",
            "after_header": f"{plan.name} (stored definition)",
        },
    }
    if check_mode or not plan.actions:
        if not plan.actions and plan.guest.xml and plan.state_after != "absent":
            out["xml"] = plan.guest.xml
        return out
    happened = apply(conn, plan, shutdown_timeout)
    out["forced_stop"] = happened["destroyed"]
    dom = happened["dom"]
    if dom is not None:
        try:
            out["uuid"] = dom.UUIDString()
            out["xml"] = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            out["state"] = STATE_NAMES.get(dom.state()[0], "nostate")
        except libvirt.libvirtError as exc:
            raise KioskError(f"Guest '{plan.name}': {_failed(conn, 'reading it back', exc)}") from exc
    return out


# ------------------------------------------------------------------ entry points


def ensure(conn, params: dict, check_mode: bool = False) -> dict:
    """lxc_domain: make the guest `params` describes (module option names) so."""
    spec = speclib.validate(params)
    guest = read_guest(conn, spec.name)
    if spec.state == "absent":
        plan = plan_absent(guest)
    else:
        if guest.dom is None and spec.xml is None and spec.rootfs is None:
            raise KioskError(f"Guest '{spec.name}': rootfs (or xml) is required to create it")
        plan = plan_guest(
            guest,
            speclib.mutator(spec),
            state=spec.state if spec.state != "present" else None,
            restart=spec.restart,
            autostart=spec.autostart,
        )
        check_bridges(conn, plan, spec)
    return result(conn, plan, check_mode, spec.shutdown_timeout)


def plan_edit(guest: Guest, mutate, *, restart: str = "on_change") -> Plan:
    """edit_definition's plan for a guest read_guest() returned; result() applies it (or, in check mode, not)."""
    speclib.check_choice(guest.name, "restart", restart, speclib.RESTART_POLICIES)
    if guest.dom is None:
        raise KioskError(f"Guest '{guest.name}' is not defined")
    return plan_guest(guest, mutate, state=None, restart=restart, autostart=None)


def edit_definition(
    conn,
    name: str,
    mutate,
    *,
    restart: str = "on_change",
    shutdown_timeout: float = 30,
    check_mode: bool = False,
) -> dict:
    """Change part of an existing guest's stored definition; see the module docstring."""
    speclib.validate_name(name)
    plan = plan_edit(read_guest(conn, name), mutate, restart=restart)
    return result(conn, plan, check_mode, shutdown_timeout)
