# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""lxc_bridge: read -> desired -> plan -> apply for a guest bridge.

`ensure(params, host, check)` is the whole module without Ansible. `host`
carries what touches the machine: a command runner, a netlink opener, a
`which`, and the few paths tests may point elsewhere. Check mode returns the
same plan without calling apply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ansible_collections.kiosk.lxc.plugins.module_utils.bridge import dnsmasq, firewall, netlink, persist
from ansible_collections.kiosk.lxc.plugins.module_utils.bridge.spec import BridgeSpec, build_spec, check_host
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.common.files import write_atomic
from ansible_collections.kiosk.lxc.plugins.module_utils.host import preflight

TOOLS = ("ip", "sysctl", "nft", "iptables", "dnsmasq", "systemctl")
FORWARD = "/proc/sys/net/ipv4/ip_forward"


@dataclass
class Host:
    run: object  # run(argv, data=None) -> (rc, stdout, stderr)
    which: object  # which(command) -> path or None
    open_netlink: object = netlink.open_netlink
    proc_root: str = "/proc"
    forward_path: str = FORWARD
    run_dir: str = preflight.RUN_DIR  # systemd runs when it has run_dir/systemd/system
    unit_dir: str = persist.UNIT_DIR


@dataclass
class State:
    links: dict
    tools: dict
    firewall: dict  # backend -> its state or None
    forward: str | None
    conf: str | None
    pid: int | None
    files: dict  # managed persistent path -> content or None
    systemd: bool


@dataclass
class Plan:
    actions: list = field(default_factory=list)  # (kind, text, arg)
    backend: str | None = None
    persistence: str = "runtime"
    warnings: list = field(default_factory=list)

    def add(self, kind: str, text: str, arg=None):
        self.actions.append((kind, text, arg))

    def kinds(self) -> list[str]:
        return [a[0] for a in self.actions]


# ---------------------------------------------------------------- read
def read_state(spec: BridgeSpec, host: Host, ipr) -> State:
    tools = {name: host.which(name) for name in TOOLS}
    available = {"nftables": bool(tools["nft"]), "iptables": bool(tools["iptables"])}
    files = {path: dnsmasq.read_file(path) for path in persist.managed_paths(spec, host.unit_dir)}
    forward = dnsmasq.read_file(host.forward_path)
    return State(
        links=netlink.read_links(ipr),
        tools=tools,
        firewall=firewall.read(host.run, spec.name, available),
        forward=forward.strip() if forward is not None else None,
        conf=dnsmasq.read_file(spec.conf_path),
        pid=dnsmasq.find_running(spec.pid_path, spec.conf_path, host.proc_root),
        files=files,
        systemd=preflight.systemd_running(host.run_dir),
    )


# ---------------------------------------------------------------- plan
def plan(spec: BridgeSpec, cur: State, unit_dir: str = persist.UNIT_DIR) -> Plan:
    """Every change needed, in the order apply runs them. Raises KioskError on bad input."""
    check_host(spec, cur.links)
    p = Plan()
    if spec.state == "absent":
        _plan_absent(spec, cur, p)
        return p
    br = spec.name
    available = {"nftables": bool(cur.tools.get("nft")), "iptables": bool(cur.tools.get("iptables"))}
    if spec.nat:
        p.backend = firewall.resolve_backend(spec.firewall, available, br)
    if spec.dnsmasq and not cur.tools.get("dnsmasq"):
        raise KioskError(f"Bridge '{br}': dnsmasq is true but the 'dnsmasq' command is not installed")

    link = cur.links.get(br)
    created = link is None
    if created:
        p.add("bridge_add", f"create bridge {br}")
    have = [] if created else list(link.addresses)
    for addr in have:
        if addr != spec.interface:
            p.add("addr_del", f"remove address {addr.with_prefixlen} from {br}", addr)
    if spec.interface not in have:
        p.add("addr_add", f"add address {spec.interface.with_prefixlen} to {br}", spec.interface)
    if created or not link.up:
        p.add("link_up", f"set {br} up")

    for backend, state in cur.firewall.items():
        if state is not None and backend != p.backend:
            p.add("fw_delete", f"remove the {backend} NAT rules of {br}", backend)
    if p.backend and not firewall.matches(p.backend, cur.firewall.get(p.backend), spec):
        p.add("fw_apply", f"load the {p.backend} NAT rules for {spec.network} (masquerade)", p.backend)
    if spec.nat and cur.forward != "1":
        p.add("forward_on", "enable net.ipv4.ip_forward")

    want_conf = dnsmasq.render_config(spec) if spec.dnsmasq else None
    if spec.dnsmasq:
        if cur.conf != want_conf:
            p.add("file_write", f"write {spec.conf_path}", (spec.conf_path, want_conf))
    elif cur.conf is not None:
        p.add("file_remove", f"remove {spec.conf_path}", spec.conf_path)

    _plan_persistence(spec, cur, p, unit_dir)

    # dnsmasq binds to the bridge's address: a new bridge or address needs a fresh one too.
    restart = spec.dnsmasq and (cur.conf != want_conf or "addr_add" in p.kinds())
    if cur.pid and (not spec.dnsmasq or restart):
        why = "dnsmasq is false" if not spec.dnsmasq else "config changed" if cur.conf != want_conf else "new address"
        p.add("dnsmasq_stop", f"stop dnsmasq (pid {cur.pid}): {why}", cur.pid)
    if spec.dnsmasq and (restart or not cur.pid):
        p.add("dnsmasq_start", f"start dnsmasq on {br} with {spec.conf_path}")
    return p


def _plan_persistence(spec: BridgeSpec, cur: State, p: Plan, unit_dir: str) -> None:
    units = [
        os.path.join(unit_dir, persist.bridge_unit(spec.name)),
        os.path.join(unit_dir, persist.dnsmasq_unit(spec.name)),
    ]
    if spec.persistent and not cur.systemd:
        p.warnings.append(
            f"Bridge '{spec.name}': persistent is true but this host does not run systemd, so the bridge, "
            "its NAT rules and dnsmasq are set up for this boot only; persistence needs systemd"
        )
        return
    want = persist.render(spec, p.backend, cur.tools, unit_dir) if spec.persistent else {}
    if spec.persistent:
        p.persistence = "systemd"
    changed_units = []
    for path, content in want.items():
        if cur.files.get(path) != content:
            p.add("file_write", f"write {path}", (path, content))
            changed_units += [path] if path in units else []
    stale = [path for path, content in cur.files.items() if content is not None and path not in want]
    for path in stale:
        if path in units and cur.systemd:
            p.add("systemctl", f"disable {os.path.basename(path)}", ["disable", os.path.basename(path)])
        p.add("file_remove", f"remove {path}", path)
    if cur.systemd and (changed_units or any(path in units for path in stale)):
        p.add("systemctl", "reload systemd units", ["daemon-reload"])
    for path in changed_units:
        p.add("systemctl", f"enable {os.path.basename(path)}", ["enable", os.path.basename(path)])


def _plan_absent(spec: BridgeSpec, cur: State, p: Plan) -> None:
    br = spec.name
    if cur.pid:
        p.add("dnsmasq_stop", f"stop dnsmasq (pid {cur.pid})", cur.pid)
    for path in (spec.conf_path, spec.pid_path, spec.leases_path):
        if os.path.lexists(path):
            p.add("file_remove", f"remove {path}", path)
    units = {persist.bridge_unit(br), persist.dnsmasq_unit(br)}
    present = [path for path, content in cur.files.items() if content is not None]
    for path in present:
        if os.path.basename(path) in units and cur.systemd:
            p.add("systemctl", f"disable {os.path.basename(path)}", ["disable", os.path.basename(path)])
        p.add("file_remove", f"remove {path}", path)
    if cur.systemd and any(os.path.basename(path) in units for path in present):
        p.add("systemctl", "reload systemd units", ["daemon-reload"])
    for backend, state in cur.firewall.items():
        if state is not None:
            p.add("fw_delete", f"remove the {backend} NAT rules of {br}", backend)
    if br in cur.links:
        p.add("bridge_del", f"delete bridge {br} (index {cur.links[br].index})")


# ---------------------------------------------------------------- apply
def apply(spec: BridgeSpec, cur: State, p: Plan, host: Host, ipr) -> None:
    run = host.run
    for kind, _text, arg in p.actions:
        if kind == "bridge_add":
            netlink.add_bridge(ipr, spec.name)
        elif kind == "addr_del":
            netlink.del_address(ipr, spec.name, arg)
        elif kind == "addr_add":
            netlink.add_address(ipr, spec.name, arg)
        elif kind == "link_up":
            netlink.set_up(ipr, spec.name)
        elif kind == "bridge_del":
            netlink.del_link(ipr, spec.name)
        elif kind == "fw_delete":
            if arg == "nftables":
                firewall.nft_delete(run, spec.name)
            else:
                firewall.ipt_delete(run, spec.name, dict(cur.firewall[arg]))
        elif kind == "fw_apply":
            if arg == "nftables":
                firewall.nft_apply(run, spec)
            else:
                firewall.ipt_apply(run, spec, cur.firewall.get("iptables"))
        elif kind == "forward_on":
            with open(host.forward_path, "w", encoding="ascii") as fh:
                fh.write("1\n")
        elif kind == "file_write":
            write_atomic(*arg, mode=0o644)
        elif kind == "file_remove":
            os.unlink(arg)
        elif kind == "systemctl":
            _checked(run(["systemctl", *arg]), spec.name, f"systemctl {' '.join(arg)} failed")
        elif kind == "dnsmasq_stop":
            dnsmasq.stop(arg, spec.name)
        elif kind == "dnsmasq_start":
            os.makedirs(spec.state_dir, mode=0o755, exist_ok=True)
            if p.persistence == "systemd":
                unit = persist.dnsmasq_unit(spec.name)
                _checked(run(["systemctl", "restart", unit]), spec.name, f"systemctl restart {unit} failed")
            else:
                dnsmasq.start(run, spec, cur.tools.get("dnsmasq") or "dnsmasq")


def _checked(result, bridge: str, what: str) -> None:
    rc, out, err = result
    if rc != 0:
        raise KioskError(f"Bridge '{bridge}': {what}: {(err or out).strip() or f'exit code {rc}'}", rc=rc)


# ---------------------------------------------------------------- the module's one call
def _summary(spec: BridgeSpec, links: dict, fw: dict, conf, files: dict) -> dict:
    link = links.get(spec.name)
    return {
        "bridge": spec.name if link else None,
        "addresses": sorted(a.with_prefixlen for a in link.addresses) if link else [],
        "up": bool(link and link.up),
        "nat": sorted(b for b, s in fw.items() if s is not None),
        "dnsmasq_config": conf,
        "persistent_files": sorted(p for p, c in files.items() if c is not None),
    }


def ensure(params: dict, host: Host, check: bool = False) -> dict:
    spec = build_spec(params)
    with host.open_netlink() as ipr:
        cur = read_state(spec, host, ipr)
        p = plan(spec, cur, host.unit_dir)
        if not check:
            apply(spec, cur, p, host, ipr)
            links = netlink.read_links(ipr)
        else:
            links = cur.links
    before = _summary(spec, cur.links, cur.firewall, cur.conf, cur.files)
    after = _expected_after(spec, cur, p, before)
    link = links.get(spec.name)
    if check:  # a pid that would not survive the run is not reported
        pid = None if {"dnsmasq_start", "dnsmasq_stop"} & set(p.kinds()) else cur.pid
    else:
        pid = dnsmasq.find_running(spec.pid_path, spec.conf_path, host.proc_root)
    present = spec.state == "present"
    return {
        "changed": bool(p.actions),
        "actions": [a[1] for a in p.actions],
        "bridge": {"name": spec.name, "exists": link is not None, "ifindex": link.index if link else None},
        "address": spec.interface.with_prefixlen if present else None,
        "firewall": p.backend,
        "persistence": p.persistence if present else None,
        "dnsmasq": {
            "enabled": bool(present and spec.dnsmasq),
            "pid": pid,
            "config": spec.conf_path,
            "leases_file": spec.leases_path,
        },
        "leases": dnsmasq.read_leases(spec.leases_path) if present else [],
        "diff": {
            "before_header": f"bridge {spec.name} (before)",
            "after_header": f"bridge {spec.name} (after)",
            "before": before,
            "after": after,
        },
        "warnings": p.warnings,
    }


def _expected_after(spec: BridgeSpec, cur: State, p: Plan, before: dict) -> dict:
    if spec.state == "absent":
        return {"bridge": None, "addresses": [], "up": False, "nat": [], "dnsmasq_config": None, "persistent_files": []}
    files = dict(cur.files)
    for kind, _text, arg in p.actions:
        if kind == "file_write" and arg[0] in files:
            files[arg[0]] = arg[1]
        elif kind == "file_remove" and arg in files:
            files[arg] = None
    return {
        "bridge": spec.name,
        "addresses": [spec.interface.with_prefixlen],
        "up": True,
        "nat": [p.backend] if p.backend else [],
        "dnsmasq_config": dnsmasq.render_config(spec) if spec.dnsmasq else None,
        "persistent_files": sorted(path for path, c in files.items() if c is not None),
    }


def info(params: dict, host: Host) -> dict:
    """lxc_bridge_info: what is there for one bridge, read-only."""
    spec = build_spec({**params, "state": "absent"})  # validates the name, fills in the paths
    with host.open_netlink() as ipr:
        links = netlink.read_links(ipr)
    available = {"nftables": bool(host.which("nft")), "iptables": bool(host.which("iptables"))}
    fw = firewall.read(host.run, spec.name, available)
    link = links.get(spec.name)
    pid = dnsmasq.find_running(spec.pid_path, spec.conf_path, host.proc_root)
    return {
        "bridge": {
            "name": spec.name,
            "exists": link is not None,
            "is_bridge": bool(link and link.kind == "bridge"),
            "ifindex": link.index if link else None,
            "up": bool(link and link.up),
            "addresses": [a.with_prefixlen for a in link.addresses] if link else [],
        },
        "firewall": sorted(b for b, s in fw.items() if s is not None),
        "dnsmasq": {
            "running": pid is not None,
            "pid": pid,
            "config": spec.conf_path if os.path.exists(spec.conf_path) else None,
            "leases_file": spec.leases_path,
        },
        "leases": dnsmasq.read_leases(spec.leases_path),
    }
