"""lxc_bridge plan and generated files, from hand-made host states (no root, no netlink).

The systemd path cannot run on this machine (no systemd as PID 1): its unit
files and systemctl calls are checked here with a recording runner, and the
units with `systemd-analyze verify` when that tool is installed.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.bridge import bridge, dnsmasq, firewall, persist
from ansible_collections.kiosk.lxc.plugins.module_utils.bridge.netlink import Link
from ansible_collections.kiosk.lxc.plugins.module_utils.bridge.spec import build_spec
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.common.files import write_atomic

TOOLS = {t: f"/usr/sbin/{t}" for t in bridge.TOOLS}
LEASE = {"mac": "52:54:00:00:00:10", "ip": "10.0.3.10", "name": "player1"}


def spec_for(tmp_path, **params):
    return build_spec({"config_dir": str(tmp_path / "etc"), "state_dir": str(tmp_path / "var"), **params})


def state(spec, *, bridge_up=True, addresses=("10.0.3.1/24",), tools=TOOLS, fw=None, conf=None, pid=None,
          files=None, systemd=False, forward="1", unit_dir=persist.UNIT_DIR):  # fmt: skip
    links = {"lo": Link(1, "lo", None, True, [ipaddress.IPv4Interface("127.0.0.1/8")])}
    if bridge_up is not None:
        links[spec.name] = Link(7, spec.name, "bridge", bridge_up, [ipaddress.IPv4Interface(a) for a in addresses])
    return bridge.State(
        links=links, tools=dict(tools), firewall=fw if fw is not None else {"nftables": None, "iptables": None},
        forward=forward, conf=conf, pid=pid, systemd=systemd,
        files=files if files is not None else dict.fromkeys(persist.managed_paths(spec, unit_dir)),
    )  # fmt: skip


def converged(spec, **kw):
    """A host where the runtime part already matches spec."""
    base = {"fw": {"nftables": firewall.nft_expected(spec), "iptables": None},
            "conf": dnsmasq.render_config(spec), "pid": 4242}  # fmt: skip
    return state(spec, **{**base, **kw})


def test_fresh_host_plan_in_order(tmp_path):
    spec = spec_for(tmp_path, persistent=False)
    plan = bridge.plan(spec, state(spec, bridge_up=None, forward="0"))
    assert plan.kinds() == [
        "bridge_add", "addr_add", "link_up", "fw_apply", "forward_on", "file_write", "dnsmasq_start",
    ]  # fmt: skip
    assert plan.backend == "nftables" and plan.persistence == "runtime" and not plan.warnings


def test_converged_host_has_nothing_to_do(tmp_path):
    spec = spec_for(tmp_path, persistent=False)
    assert bridge.plan(spec, converged(spec)).actions == []


def test_range_change_restarts_only_dnsmasq(tmp_path):
    spec = spec_for(tmp_path, persistent=False)
    old = spec_for(tmp_path, persistent=False, dhcp_range="10.0.3.100,10.0.3.200")
    plan = bridge.plan(spec, converged(spec, conf=dnsmasq.render_config(old), pid=99))
    assert plan.kinds() == ["file_write", "dnsmasq_stop", "dnsmasq_start"]
    assert plan.actions[1][2] == 99


def test_foreign_addresses_on_the_bridge_are_replaced_and_dnsmasq_rebinds(tmp_path):
    spec = spec_for(tmp_path, persistent=False)
    cur = converged(spec, addresses=("10.0.4.1/24",))
    assert bridge.plan(spec, cur).kinds() == ["addr_del", "addr_add", "dnsmasq_stop", "dnsmasq_start"]


def test_backend_switch_removes_the_other_backends_objects(tmp_path):
    spec = spec_for(tmp_path, persistent=False, firewall="iptables")
    cur = converged(spec)
    plan = bridge.plan(spec, cur)
    assert [(k, a) for k, _t, a in plan.actions] == [("fw_delete", "nftables"), ("fw_apply", "iptables")]
    cur.firewall = {"nftables": None, "iptables": firewall.ipt_expected(spec)}
    assert bridge.plan(spec, cur).actions == []


def test_missing_tools_fail_in_the_plan(tmp_path):
    spec = spec_for(tmp_path, firewall="iptables")
    with pytest.raises(KioskError, match="firewall 'iptables' needs the 'iptables' command"):
        bridge.plan(spec, state(spec, tools={**TOOLS, "iptables": None}))
    with pytest.raises(KioskError, match="neither is installed"):
        bridge.plan(spec_for(tmp_path), state(spec, tools={**TOOLS, "iptables": None, "nft": None}))
    with pytest.raises(KioskError, match="'dnsmasq' command is not installed"):
        bridge.plan(spec, state(spec, tools={**TOOLS, "dnsmasq": None}))


def test_persistent_without_systemd_warns_and_stays_runtime(tmp_path):
    spec = spec_for(tmp_path)
    plan = bridge.plan(spec, converged(spec))
    assert plan.actions == [] and plan.persistence == "runtime"
    assert "persistence needs systemd" in plan.warnings[0]


def test_absent_removes_only_what_is_ours(tmp_path):
    spec = spec_for(tmp_path)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / f"dnsmasq-{spec.name}.conf").write_text("x")
    cur = converged(spec, fw={"nftables": {"chains": {}}, "iptables": None})
    plan = bridge.plan(build_spec({"state": "absent", "config_dir": spec.config_dir, "state_dir": spec.state_dir}), cur)
    assert [(k, a) for k, _t, a in plan.actions] == [
        ("dnsmasq_stop", 4242), ("file_remove", spec.conf_path), ("fw_delete", "nftables"), ("bridge_del", None),
    ]  # fmt: skip


# ---------------------------------------------------------------- systemd (cannot run here)
class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, argv, data=None):
        self.calls.append(list(argv))
        return 0, "", ""


def test_persistent_with_systemd_writes_enables_and_uses_the_unit(tmp_path):
    units = tmp_path / "units"
    spec = spec_for(tmp_path, dhcp_hosts=[LEASE])
    cur = converged(spec, systemd=True, unit_dir=str(units), pid=None)
    plan = bridge.plan(spec, cur, str(units))
    assert plan.persistence == "systemd"
    run = Recorder()
    host = bridge.Host(run=run, which=TOOLS.get, unit_dir=str(units))
    bridge.apply(spec, cur, plan, host, ipr=None)
    assert run.calls == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", f"kiosk-lxc-bridge-{spec.name}.service"],
        ["systemctl", "enable", f"kiosk-lxc-dnsmasq-{spec.name}.service"],
        ["systemctl", "restart", f"kiosk-lxc-dnsmasq-{spec.name}.service"],
    ]
    written = sorted(p.name for p in units.iterdir())
    assert written == [f"kiosk-lxc-bridge-{spec.name}.service", f"kiosk-lxc-dnsmasq-{spec.name}.service"]
    assert (tmp_path / "etc" / f"nat-{spec.name}.nft").read_text() == firewall.nft_script(spec)
    # Written once: the next plan on the same files only has to start nothing new.
    cur.files = {p: dnsmasq.read_file(p) for p in persist.managed_paths(spec, str(units))}
    cur.pid = 4242
    assert bridge.plan(spec, cur, str(units)).actions == []
    # persistent: false later removes the units again (disabled first).
    spec_rt = spec_for(tmp_path, dhcp_hosts=[LEASE], persistent=False)
    kinds = [(k, a if k == "systemctl" else None) for k, _t, a in bridge.plan(spec_rt, cur, str(units)).actions]
    assert kinds == [
        ("file_remove", None), ("systemctl", ["disable", f"kiosk-lxc-bridge-{spec.name}.service"]),
        ("file_remove", None), ("systemctl", ["disable", f"kiosk-lxc-dnsmasq-{spec.name}.service"]),
        ("file_remove", None), ("systemctl", ["daemon-reload"]),
    ]  # fmt: skip


def test_unit_files_content(tmp_path):
    spec = spec_for(tmp_path, address="10.0.5.1/24")
    files = persist.render(spec, "nftables", TOOLS, str(tmp_path))
    unit = files[str(tmp_path / f"kiosk-lxc-bridge-{spec.name}.service")]
    assert "ExecStart=/usr/sbin/ip address replace 10.0.5.1/24 broadcast 10.0.5.255 dev lxcbr0" in unit
    assert "|| /usr/sbin/ip link add name lxcbr0 type bridge" in unit  # adds, never deletes
    assert "link del" not in unit
    assert f"ExecStart=/usr/sbin/nft -f {tmp_path}/etc/nat-lxcbr0.nft" in unit
    assert "net.ipv4.ip_forward=1" in unit
    dns = files[str(tmp_path / f"kiosk-lxc-dnsmasq-{spec.name}.service")]
    assert f"ExecStart=/usr/sbin/dnsmasq --keep-in-foreground --conf-file={spec.conf_path}" in dns
    assert "Requires=kiosk-lxc-bridge-lxcbr0.service" in dns
    ipt = persist.render(spec_for(tmp_path, firewall="iptables"), "iptables", TOOLS, str(tmp_path))
    assert (
        "-C POSTROUTING -j KIOSK-LXC-lxcbr0 2>/dev/null || /usr/sbin/iptables -w -t nat -I POSTROUTING"
        in (ipt[str(tmp_path / "kiosk-lxc-bridge-lxcbr0.service")])
    )
    nonat = persist.render(spec_for(tmp_path, nat=False, dnsmasq=False), None, TOOLS, str(tmp_path))
    assert list(nonat) == [str(tmp_path / "kiosk-lxc-bridge-lxcbr0.service")]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_unit_files_pass_systemd_analyze_verify(tmp_path):
    spec = spec_for(tmp_path)
    tools = {t: shutil.which(t) or f"/usr/sbin/{t}" for t in bridge.TOOLS}
    for path, content in persist.render(spec, "nftables", tools, str(tmp_path)).items():
        if path.endswith(".service"):
            write_atomic(path, content)
    names = [str(p) for p in tmp_path.glob("*.service")]
    proc = subprocess.run(["systemd-analyze", "verify", *names], capture_output=True, text=True, check=False)
    problems = [
        line for line in (proc.stdout + proc.stderr).splitlines()
        if "kiosk-lxc" in line and "not found" not in line.lower()
    ]  # fmt: skip
    assert not problems, proc.stdout + proc.stderr


def test_dnsmasq_config_binds_to_the_bridge_only(tmp_path):
    spec = spec_for(tmp_path, dns_domain="lxc", dhcp_hosts=[LEASE])
    lines = dnsmasq.render_config(spec).splitlines()
    for expected in (
        "interface=lxcbr0", "except-interface=lo", "bind-interfaces", "listen-address=10.0.3.1",
        f"dhcp-leasefile={tmp_path}/var/lxcbr0.leases", f"pid-file={tmp_path}/var/dnsmasq-lxcbr0.pid",
        "dhcp-range=10.0.3.2,10.0.3.254,255.255.255.0,1h", "domain=lxc", "local=/lxc/",
        "host-record=lxcbr0,lxcbr0.lxc,10.0.3.1", "dhcp-host=52:54:00:00:00:10,10.0.3.10,player1",
    ):  # fmt: skip
        assert expected in lines


def test_dnsmasq_config_is_accepted_by_dnsmasq(tmp_path):
    if not shutil.which("dnsmasq"):
        pytest.skip("dnsmasq not installed")
    spec = spec_for(tmp_path, dns_domain="lxc", dhcp_hosts=[LEASE])
    conf = tmp_path / "d.conf"
    conf.write_text(dnsmasq.render_config(spec))
    proc = subprocess.run(["dnsmasq", "--test", f"--conf-file={conf}"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "syntax check OK" in proc.stderr, proc.stderr


def test_lease_file_parsing(tmp_path):
    leases = tmp_path / "x.leases"
    leases.write_text(
        "1764000000 52:54:00:00:00:10 10.0.3.10 player1 01:52:54:00:00:00:10\n"
        "1764000100 52:54:00:AA:00:11 10.0.3.57 * *\n"
        "duid 00:01:00:01:2c:aa\n"
    )
    assert dnsmasq.read_leases(str(leases)) == [
        {"expiry": 1764000000, "mac": "52:54:00:00:00:10", "ip": "10.0.3.10", "hostname": "player1"},
        {"expiry": 1764000100, "mac": "52:54:00:aa:00:11", "ip": "10.0.3.57", "hostname": None},
    ]
    assert dnsmasq.read_leases(str(tmp_path / "missing")) == []


def test_find_running_only_takes_our_dnsmasq(tmp_path):
    proc = tmp_path / "proc"
    (proc / "100").mkdir(parents=True)
    (proc / "100" / "cmdline").write_bytes(b"dnsmasq\0--conf-file=/etc/kiosk-lxc/dnsmasq-lxcbr0.conf\0")
    (proc / "200").mkdir()
    (proc / "200" / "cmdline").write_bytes(b"dnsmasq\0--conf-file=/etc/other.conf\0")
    pidfile = tmp_path / "pid"
    for pid in ("200", "300", "garbage"):
        pidfile.write_text(pid)
        assert dnsmasq.find_running(str(pidfile), "/etc/kiosk-lxc/dnsmasq-lxcbr0.conf", str(proc)) is None
    pidfile.write_text("100\n")
    # The fake /proc has no ns/net link, so "same network namespace" cannot be proven: not ours.
    assert dnsmasq.find_running(str(pidfile), "/etc/kiosk-lxc/dnsmasq-lxcbr0.conf", str(proc)) is None
    (proc / "self" / "ns").mkdir(parents=True)
    (proc / "100" / "ns").mkdir()
    (proc / "self" / "ns" / "net").write_text("")
    (proc / "100" / "ns" / "net").hardlink_to(proc / "self" / "ns" / "net")
    assert dnsmasq.find_running(str(pidfile), "/etc/kiosk-lxc/dnsmasq-lxcbr0.conf", str(proc)) == 100
