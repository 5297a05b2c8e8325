"""kiosk.lxc.lxc_bridge for real: bridge, dnsmasq and NAT inside network namespaces this test makes.

The module runs through ansible-playbook inside the lab's `host` namespace; a
veth end in the `guest` namespace is the DHCP/DNS client (busybox udhcpc and
nslookup) and the `uplink` namespace stands for the outside world. Nothing
outside these namespaces is touched (config/state files go to tmp_path).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from lxc_bridge_lab import UPLINK_HOST, Lab

pytestmark = pytest.mark.root

NEEDS = ("ip", "dnsmasq", "nft", "iptables", "busybox")
BRIDGE, INFO = "kiosk.lxc.lxc_bridge", "kiosk.lxc.lxc_bridge_info"
CHECK = {"check_mode": True, "diff": True}


@pytest.fixture
def lab():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    missing = [tool for tool in NEEDS if not shutil.which(tool)]
    if missing:
        pytest.skip(f"missing commands: {', '.join(missing)}")
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


def _args(lab: Lab, tmp_path: Path, **extra) -> dict:
    args = {
        "name": f"kbr{lab.tag}",
        "config_dir": str(tmp_path / "etc"),
        "state_dir": str(tmp_path / "var"),
    }
    args.update(extra)
    return args


def info_args(args: dict) -> dict:
    return {k: args[k] for k in ("name", "config_dir", "state_dir")}


def _files(tmp_path: Path) -> dict:
    return {str(p): p.read_text() for p in sorted(tmp_path.rglob("*")) if p.is_file() and p.suffix != ".leases"}


def test_bridge_serves_dhcp_dns_and_nat_and_keeps_in_place(lab, tmp_path):
    args = _args(
        lab, tmp_path, dns_domain="lxc", dhcp_hosts=[{"mac": lab.guest_mac, "ip": "10.0.3.10", "name": "player1"}]
    )
    br = args["name"]

    # One play: a check run, what is there after it, the real run.
    check, seen, first = lab.run_tasks([(BRIDGE, args, CHECK), (INFO, info_args(args)), args])
    assert check["_status"] == "changed", check.get("msg")
    assert not seen["bridge"]["exists"], "check mode created the bridge"
    assert check["diff"]["before"]["bridge"] is None and check["diff"]["after"]["bridge"] == br
    assert first["_status"] == "changed", first.get("msg")
    assert first["actions"] == check["actions"], "check mode and the real run disagree"
    assert first["persistence"] == "runtime"
    assert any("persistence needs systemd" in w for w in first.get("warnings", []))
    links = lab.links()
    assert links[br]["kind"] == "bridge" and links[br]["up"] and links[br]["addresses"] == ["10.0.3.1/24"]
    assert first["bridge"]["ifindex"] == links[br]["ifindex"]
    pid = first["dnsmasq"]["pid"]
    assert pid and Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"dnsmasq")

    # Idempotent: a check run and a real run both find nothing to do.
    check, again = lab.run_tasks([(BRIDGE, args, CHECK), args])
    assert check["_status"] == "ok", check["actions"]
    assert again["_status"] == "ok", again["actions"]
    assert again["dnsmasq"]["pid"] == pid

    # The guest's MAC is listed: it gets the static lease, router and DNS are the bridge.
    lab.ns(lab.host, "ip", "link", "set", "cv0", "master", br)
    offer = lab.dhcp()
    assert (offer["ip"], offer["router"], offer["dns"], offer.get("domain")) == (
        "10.0.3.10",
        "10.0.3.1",
        "10.0.3.1",
        "lxc",
    )
    # DNS: the bridge's name and the guest's static name resolve through the bridge's dnsmasq.
    assert "Address: 10.0.3.1" in lab.resolve(f"{br}.lxc", "10.0.3.1")
    assert "Address: 10.0.3.10" in lab.resolve("player1.lxc", "10.0.3.1")
    # NAT: the uplink sees the host's uplink address, not the guest's.
    assert lab.connect_out() == UPLINK_HOST
    # A range change (and the static lease dropped) restarts only dnsmasq: same bridge, port kept.
    changed = dict(args, dhcp_range="10.0.3.100,10.0.3.120", dhcp_hosts=[])
    same, check2, restart = lab.run_tasks([args, (BRIDGE, changed, CHECK), changed])
    leases = same["leases"]
    assert [(x["mac"], x["ip"], x["hostname"]) for x in leases] == [(lab.guest_mac, "10.0.3.10", "player1")]
    assert restart["_status"] == "changed"
    assert restart["actions"] == check2["actions"]
    assert [a.split()[0] for a in restart["actions"]] == ["write", "stop", "start"], restart["actions"]
    assert restart["dnsmasq"]["pid"] not in (None, pid)
    links = lab.links()
    assert links[br]["ifindex"] == first["bridge"]["ifindex"]
    assert links["cv0"]["master"] == br, "the guest's port left the bridge"
    lab.ns(lab.guest, "ip", "address", "flush", "dev", "cv1")
    offer = lab.dhcp()
    assert 100 <= int(offer["ip"].rsplit(".", 1)[1]) <= 120, offer["ip"]
    assert lab.run_module(changed)["_status"] == "ok"


def test_bad_inputs_fail_before_any_change(lab, tmp_path):
    good = _args(lab, tmp_path, address="10.0.7.1/24")
    assert lab.run_module(good)["_status"] == "changed"
    lab.ns(lab.host, "ip", "link", "add", "kbother0", "type", "veth", "peer", "name", "kbother1")
    lab.ns(lab.host, "ip", "address", "add", "10.0.8.1/24", "dev", "kbother0")
    before = (lab.links(), lab.ruleset(), _files(tmp_path))

    mac = "52:54:00:00:00:10"
    bad = [
        (dict(good, address="10.0.7.0/24"), "not an interface address"),
        (dict(good, dhcp_range="10.0.7.10,10.0.9.20"), "outside the subnet"),
        (dict(good, address="10.0.8.5/16"), "overlaps 10.0.8.1/24 on interface 'kbother0'"),
        (dict(good, dhcp_hosts=[{"mac": mac, "ip": "10.0.9.10"}]), "outside the subnet"),
        (dict(good, dhcp_hosts=[{"mac": mac, "ip": "10.0.7.10"}, {"mac": mac, "ip": "10.0.7.11"}]),
         f"mac {mac} is already used"),
        (dict(good, dhcp_hosts=[{"mac": mac, "ip": "10.0.7.10"}, {"mac": "52:54:00:00:00:11", "ip": "10.0.7.10"}]),
         "ip 10.0.7.10 is already used"),
        (dict(good, name="up0", address="10.0.9.1/24"), "taken by an interface of kind 'veth'"),
        (dict(good, name="kbother1", state="absent"), "taken by an interface of kind 'veth'"),
        (dict(good, name="kb-name-too-long0"), "at most 15"),
    ]  # fmt: skip
    results = lab.run_tasks([args for args, _msg in bad])
    for (args, expected), result in zip(bad, results, strict=True):
        assert result["_status"] == "failed", (args, result)
        assert expected in result["msg"], (expected, result["msg"])
        assert "Traceback" not in result.get("module_stderr", "")
    assert (lab.links(), lab.ruleset(), _files(tmp_path)) == before, "a failed run changed something"
    assert lab.run_module(good)["_status"] == "ok"


def test_iptables_backend_switch_and_absent(lab, tmp_path):
    args = _args(lab, tmp_path, address="10.0.5.1/24", firewall="iptables", persistent=False)
    br, chain = args["name"], f"KIOSK-LXC-{args['name']}"
    first = lab.run_module(args)
    assert first["_status"] == "changed", first.get("msg")
    assert first["firewall"] == "iptables" and not first.get("warnings")
    rules = lab.ns(lab.host, "iptables", "-w", "-t", "nat", "-S").stdout.splitlines()
    assert f"-A POSTROUTING -j {chain}" in rules
    assert f"-A {chain} -s 10.0.5.0/24 ! -d 10.0.5.0/24 -j MASQUERADE" in rules
    lab.ns(lab.host, "ip", "link", "set", "cv0", "master", br)
    offer = lab.dhcp()
    assert offer["router"] == "10.0.5.1"
    again, info = lab.run_tasks([args, (INFO, info_args(args))])
    assert again["_status"] == "ok"
    assert info["_status"] == "ok" and info["firewall"] == ["iptables"]
    assert info["bridge"] == {
        "name": br, "exists": True, "is_bridge": True, "ifindex": first["bridge"]["ifindex"], "up": True,
        "addresses": ["10.0.5.1/24"],
    }  # fmt: skip
    assert info["dnsmasq"]["running"] and info["dnsmasq"]["pid"] == first["dnsmasq"]["pid"]
    assert [(x["mac"], x["ip"]) for x in info["leases"]] == [(lab.guest_mac, offer["ip"])]
    assert lab.connect_out() == UPLINK_HOST

    # Someone else's rule in POSTROUTING stays when the module changes backend.
    lab.ns(lab.host, "iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-o", "up0", "-j", "RETURN")
    moved = lab.run_module(dict(args, firewall="nftables"))
    assert moved["_status"] == "changed" and moved["firewall"] == "nftables"
    rules = lab.ns(lab.host, "iptables", "-w", "-t", "nat", "-S").stdout.splitlines()
    assert chain not in "\n".join(rules) and "-A POSTROUTING -o up0 -j RETURN" in rules
    assert f"kiosk_lxc_{br}" in lab.ruleset()

    gone = dict(args, state="absent")
    check, seen, removed = lab.run_tasks([(BRIDGE, gone, CHECK), (INFO, info_args(args)), gone])
    assert check["_status"] == "changed" and seen["bridge"]["exists"] and seen["dnsmasq"]["running"]
    assert removed["_status"] == "changed" and removed["actions"] == check["actions"]
    pid = moved["dnsmasq"]["pid"]
    assert not Path(f"/proc/{pid}").exists(), "dnsmasq still runs"
    assert br not in lab.links() and "cv0" in lab.links()
    assert f"kiosk_lxc_{br}" not in lab.ruleset()
    assert _files(tmp_path) == {}
    last, info = lab.run_tasks([gone, (INFO, info_args(args))])
    assert last["_status"] == "ok"
    assert not info["bridge"]["exists"] and not info["dnsmasq"]["running"] and info["firewall"] == []


def test_nat_false_and_no_dnsmasq_leave_no_rules_or_process(lab, tmp_path):
    args = _args(lab, tmp_path, address="10.0.6.1/24", nat=False, dnsmasq=False, persistent=False)
    result = lab.run_module(args)
    assert result["_status"] == "changed" and result["firewall"] is None
    assert result["dnsmasq"]["pid"] is None
    assert "kiosk_lxc" not in lab.ruleset()
    assert not list(tmp_path.rglob("*.conf"))
    assert json.dumps(result["actions"]).count("dnsmasq") == 0
    assert lab.run_module(args)["_status"] == "ok"
