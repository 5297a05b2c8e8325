# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""kiosk.lxc.cgroup_device: read -> desired -> plan -> apply.

Targets: a libvirt LXC guest (`domain`), a systemd machine (`machine`) or a
raw cgroup path (`cgroup`). For a guest with `persistent`, the rules are also
kept in its <metadata> (DEVICES_NS): rules_mutate is the part of the guest's
definition this module owns, and domain.manage (the one writer of a guest's
definition, plan_edit in the plan, result in apply) changes the persistent
definition with it, never restarting the guest (its running cgroup already
has the rules); the libvirt hook (hook.py) is installed to apply them at every
start.
state=hook installs only that hook (run_hook), with no target: the host role
puts it in place before libvirtd starts, so libvirtd runs it from the start.
The hook's code is hook.py's import closure, in a directory of its own
(common.shipped: LIB_ROOT/hook-<digest>); the hook script names it.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from dataclasses import dataclass, field

from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import cgroupfs, hook, persist, rules, systemd
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup.v1 import V1Devices
from ansible_collections.kiosk.lxc.plugins.module_utils.common import shipped
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import manage, xmldef
from ansible_collections.kiosk.lxc.plugins.module_utils.host import preflight

TARGETS = ("domain", "machine", "cgroup")
LIBVIRTD_PIDFILES = ("/run/libvirtd.pid", "/run/virtlxcd.pid")
LIBVIRT_SOCKET = "/run/libvirt/libvirt-sock"


@dataclass
class Desired:
    kind: str
    target: str
    specs: list
    wanted: list
    state: str
    persistent: bool


@dataclass
class Current:
    backend: object = None
    rules: list = field(default_factory=list)
    guest: manage.Guest | None = None
    stored: list | None = None


@dataclass
class Host:
    """What the module touches on the host; tests hand in their own paths."""

    run: object = None
    proc_devices: str = rules.PROC_DEVICES
    mountinfo: str = cgroupfs.MOUNTINFO
    hook_dir: str = hook.HOOK_DIR
    lib_dir: str = shipped.LIB_ROOT
    # The launchers that may still name the old shared library (lib_dir/python); it goes when none does.
    legacy_launchers: tuple = shipped.LEGACY_LAUNCHERS
    python: str = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    pidfiles: tuple = LIBVIRTD_PIDFILES
    libvirt_socket: str = LIBVIRT_SOCKET


def desired(params: dict, majors) -> Desired:
    """Validate everything the user gave; nothing has been touched yet."""
    given = [k for k in TARGETS if params.get(k)]
    if len(given) != 1:
        raise KioskError(f"Give exactly one of domain, machine or cgroup (got {', '.join(given) or 'none'})")
    kind = given[0]
    persistent = params.get("persistent")
    if persistent is None:
        persistent = kind == "domain"
    if persistent and kind != "domain":
        raise KioskError(f"Option persistent: only a libvirt guest (domain) keeps rules, not a {kind}")
    if not params.get("rules"):
        raise KioskError("Option rules: give at least one device rule")
    specs = [rules.parse_spec(item) for item in params["rules"]]
    wanted = [rule for spec in specs for rule in spec.resolve(majors)]
    return Desired(kind, params[kind], specs, wanted, params.get("state") or "present", persistent)


def _guest(conn, name: str) -> manage.Guest:
    guest = manage.read_guest(conn, name)
    if guest.dom is None:
        raise KioskError(f"Guest '{name}': no such guest on {conn.getURI()}")
    dtype = xmldef.parse(guest.xml, f"Guest '{name}': stored definition").get("type")
    if dtype != "lxc":
        raise KioskError(f"Guest '{name}' is not an LXC guest (its type is '{dtype}')")
    return guest


def _stored(guest: manage.Guest) -> list:
    """The rules kept in the guest's stored definition, read as the hook reads them at start."""
    specs, problems = persist.specs_from_domain_xml(guest.xml)
    if problems:
        raise KioskError(f"Guest '{guest.name}': its stored device rules are broken: {problems[0]}")
    return specs


def rules_mutate(specs: list):
    """mutate(root) for manage.plan_edit: the guest's DEVICES_NS element holds exactly specs (none: no element).

    The element is persist.metadata_xml's, in DEVICES_NS under its prefix, its rules too: that is how
    setMetadata (which earlier versions used) stored them, so a guest's element reads the same
    whichever version wrote it. Nothing else changes.
    """
    text = persist.metadata_xml(specs)

    def mutate(root) -> None:
        new = None
        if text is not None:
            new = xmldef.etree.Element(f"{{{persist.URI}}}{persist.ROOT}", nsmap={persist.PREFIX: persist.URI})
            for rule in list(xmldef.parse(text, "device rules")):
                rule.tag = f"{{{persist.URI}}}{rule.tag}"
                new.append(rule)
        xmldef.set_metadata(root, f"{{{persist.URI}}}{persist.ROOT}", new)

    return mutate


def read(want: Desired, conn, host: Host, majors) -> Current:
    cur = Current()
    if want.kind == "domain":
        cur.guest = _guest(conn, want.target)
        if want.persistent and not cur.guest.persistent:
            raise KioskError(f"Guest '{want.target}' is transient: persistent rules need a defined guest")
        if want.persistent:
            cur.stored = _stored(cur.guest)
        if cur.guest.active:
            cur.backend = cgroupfs.backend_for_pid(cur.guest.dom.ID(), mountinfo=host.mountinfo)
        elif not want.persistent:
            raise KioskError(f"Guest '{want.target}' is not running and persistent is false: nothing to change")
    elif want.kind == "machine":
        props = systemd.machine_show(want.target, host.run)
        path = cgroupfs.cgroup_of_pid(int(props["Leader"]), mountinfo=host.mountinfo)
        backend = cgroupfs.backend_for_path(path, host.mountinfo)
        cur.backend = (
            backend if isinstance(backend, V1Devices) else systemd.SystemdDevices(props["Unit"], host.run, majors)
        )
    else:
        cur.backend = cgroupfs.backend_for_path(want.target, host.mountinfo)
    if cur.backend is not None:
        cur.rules = cur.backend.read()
    return cur


def plan(want: Desired, cur: Current, host: Host, majors) -> dict:
    key = cur.backend.key if cur.backend is not None else rules.v1_key
    result = {"allow": [], "deny": [], "after": list(cur.rules), "warnings": [], "definition": None, "hook": []}
    if cur.backend is not None:
        if want.state == "present":
            result["allow"] = rules.plan_allow(cur.rules, want.wanted, key)
            result["after"] = rules.after_allow(cur.rules, result["allow"], key)
        else:
            if rules.allows_everything(cur.rules):
                raise KioskError(
                    f"cgroup {cur.backend.path} allows every device (a *:* rwm); single rules cannot be removed from it"
                )
            result["deny"] = rules.plan_deny(cur.rules, want.wanted, key)
            result["after"] = rules.after_deny(cur.rules, result["deny"], key)
            result["warnings"] = rules.still_covered(result["after"], want.wanted, key)
    stored_after = None
    if cur.stored is not None:
        merge = persist.stored_present if want.state == "present" else persist.stored_absent
        stored_after = merge(cur.stored, want.specs, majors)
        if persist.metadata_xml(stored_after) != persist.metadata_xml(cur.stored):
            # The rules compared, not the element: a guest that earlier versions gave rules is not rewritten.
            # Never a restart: the running cgroup has the rules already, the stored ones are for the next start.
            result["definition"] = manage.plan_edit(cur.guest, rules_mutate(stored_after), restart="never")
    result["stored_after"] = stored_after
    if stored_after:
        result.update(plan_hook(host))
    path = cur.backend.path if cur.backend is not None else None
    actions = [f"allow '{r}' in {path}" for r in result["allow"]]
    actions += [f"deny '{r}' in {path}" for r in result["deny"]]
    if result["definition"] is not None:
        actions.append(f"store {len(stored_after)} device rule(s) in guest '{want.target}' metadata")
    result["actions"] = actions + hook_actions(result)
    result["changed"] = bool(result["allow"] or result["deny"] or result["definition"] or result["hook"])
    return result


def hook_path(host: Host) -> str:
    return os.path.join(host.hook_dir, "lxc.d", hook.HOOK_NAME)


def hook_script(python: str, lib_dir: str) -> str:
    return (
        f"#!{python}\n"
        "# Installed by kiosk.lxc.cgroup_device: re-applies the device rules stored in a guest's\n"
        "# <metadata> when it starts. Never fails a start; see the log file in /var/log/libvirt.\n"
        "import sys\n"
        "sys.dont_write_bytecode = True\n"
        f"sys.path.insert(0, {lib_dir!r})\n"
        f"from {hook.__name__} import main\n"
        "sys.exit(main())\n"
    )


def plan_hook(host: Host, only_if_running: bool = False) -> dict:
    """The hook's directory and script to (re)write, what goes after, and whether libvirtd must be reloaded.

    The directory is hook.py's import closure, named by its digest; the script names the directory,
    so a new version of the code rewrites both. libvirtd finds a new hook only when it starts or
    reloads: it is reloaded when the hook script is new. With only_if_running, a libvirtd that is not
    running is left alone (it finds the hook when it starts).
    """
    tree = shipped.plan_tree(host.lib_dir, "hook", shipped.tree(hook.__name__))
    script = hook_path(host)
    files = {script: (hook_script(host.python, tree.path), 0o755)}
    todo = shipped.plan_files(files)
    remove = tree.remove + shipped.legacy_unused(host.lib_dir, host.legacy_launchers, {script: files[script][0]})
    reload = script in todo and not os.path.exists(script)
    if reload and only_if_running:
        reload = libvirtd_running(host)
    steps = [f"{tree.write.replace('create', 'install')} {tree.path}"] if tree.write else []
    steps += [f"install {p}" for p in todo] + [f"remove {p}" for p in remove]
    return {"hook_plan": (tree, files, todo, remove), "hook": steps, "reload": reload}


def hook_actions(result: dict) -> list[str]:
    actions = list(result["hook"])
    if result.get("reload"):
        actions.append("reload libvirtd (SIGHUP) so that it runs the new hook")
    return actions


def libvirtd_running(host: Host) -> bool:
    """Whether a libvirtd answers on its socket (it may run where its pid file is out of sight)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(host.libvirt_socket)
        except OSError:
            return False
    return True


def _reload_libvirtd(host: Host) -> None:
    if preflight.systemd_running() and host.run is not None:
        rc, _out, _err = host.run(["systemctl", "reload", "libvirtd.service"])
        if rc == 0:
            return
    for pidfile in host.pidfiles:
        try:
            with open(pidfile, encoding="utf-8") as fh:
                os.kill(int(fh.read().strip()), signal.SIGHUP)
            return
        except (OSError, ValueError):
            continue
    raise KioskError("The libvirt hook was installed, but libvirtd could not be reloaded; reload it by hand")


def apply(conn, cur: Current, result: dict, host: Host) -> None:
    for rule in result["allow"]:
        cur.backend.allow(rule)
    for rule in result["deny"]:
        cur.backend.deny(rule)
    if result["definition"] is not None:
        manage.result(conn, result["definition"], check_mode=False, shutdown_timeout=0)
    apply_hook(result, host)


def apply_hook(result: dict, host: Host) -> None:
    """The directory first, then the script that names it (each atomic), then the old directories."""
    if result["hook"]:
        tree, files, todo, remove = result["hook_plan"]
        shipped.write_tree(tree)
        shipped.write_files(files, todo, "the libvirt hook")
        shipped.remove_trees(remove)
    if result.get("reload"):
        _reload_libvirtd(host)


def _text(rule_list) -> str:
    return "".join(f"{r}\n" for r in rule_list)


def run_hook(check_mode: bool, host: Host) -> dict:
    """state=hook: only the libvirt hook, for a host that has no guest rules yet (the host role)."""
    result = plan_hook(host, only_if_running=True)
    if not check_mode:
        apply_hook(result, host)
    label = f"libvirt hook {hook_path(host)}"
    tree, _files, _todo, remove = result["hook_plan"]
    before = shipped.read_text(hook_path(host))
    return {
        "changed": bool(result["hook"]),
        "cgroup_version": None,
        "cgroup_path": None,
        "rules": [],
        "added": [],
        "removed": [],
        "applied": False,
        "persistent_rules": None,
        "actions": hook_actions(result),
        "warnings": [],
        "diff": {
            "before": "".join(f"{p}\n" for p in _hook_dirs(host, remove)) + (before or ""),
            "after": f"{tree.path}\n{hook_script(host.python, tree.path)}",
            "before_header": f"{label}: library directories, then the script",
            "after_header": f"{label}: library directories, then the script",
        },
    }


def _hook_dirs(host: Host, remove: list[str]) -> list[str]:
    """The hook's library directories now: its own, and the old shared one while the hook script names it."""
    legacy = os.path.join(host.lib_dir, shipped.LEGACY)
    named = repr(legacy) in (shipped.read_text(hook_path(host)) or "")
    return sorted({*shipped.installed(host.lib_dir, "hook"), *([legacy] if named or legacy in remove else [])})


def run(params: dict, conn, check_mode: bool, host: Host) -> dict:
    """The whole module: returns what exit_json gets."""
    if params.get("state") == "hook":
        if any(params.get(k) for k in (*TARGETS, "rules")) or params.get("persistent") is not None:
            raise KioskError(
                "Option state: hook installs only the libvirt hook; give no domain, machine, cgroup, rules"
                " or persistent"
            )
        return run_hook(check_mode, host)
    majors = rules.read_proc_devices(host.proc_devices)
    want = desired(params, majors)
    cur = read(want, conn, host, majors)
    result = plan(want, cur, host, majors)
    if not check_mode:
        apply(conn, cur, result, host)
    path = cur.backend.path if cur.backend is not None else None
    label = f"{want.kind} {want.target}"
    before = _text(cur.rules) + (f"# stored:\n{_text(cur.stored)}" if cur.stored is not None else "")
    after = _text(result["after"]) + (
        f"# stored:\n{_text(result['stored_after'])}" if result["stored_after"] is not None else ""
    )
    return {
        "changed": result["changed"],
        "cgroup_version": cur.backend.version if cur.backend is not None else None,
        "cgroup_path": path,
        "rules": [str(r) for r in result["after"]],
        "added": [str(r) for r in result["allow"]],
        "removed": [str(r) for r in result["deny"]],
        "applied": cur.backend is not None,
        "persistent_rules": [str(s) for s in result["stored_after"]] if result["stored_after"] is not None else None,
        "actions": result["actions"],
        "warnings": result["warnings"],
        "diff": {
            "before": before,
            "after": after,
            "before_header": f"{label} device rules ({path or 'not running'})",
            "after_header": f"{label} device rules ({path or 'not running'})",
        },
    }
