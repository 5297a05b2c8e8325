"""A guest cannot send as another guest, and no two clones share an identity (issue 18, item 9).

Two confined busybox guests, A and B, of one base, made by kiosk.lxc.guest through
ansible-playbook on a bridge of the test's own, each with a static lease (network.ip).
An observer network namespace of the test's own hangs on the same bridge (a veth port)
and records every frame it sees. Guest B's init, as root in the guest (CAP_NET_RAW
in its own network namespace, nothing more), sends raw frames from a small static
program (AF_PACKET): one with A's MAC as its source, an ARP reply that claims A's
address with B's own MAC, an IPv4 packet from A's address, and, as the control, an
IPv4 packet from its own address. Each carries a marker the observer looks for.

Without a filter on B's port the forged frames reach the observer and the bridge
learns A's MAC on B's port (where it then sends A's traffic). With it only the
control arrives, A still answers a ping, and the same holds after B restarts.

The base has a machine-id and an SSH host key: the two clones must each have their own.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import guest as guestlib
import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.guest.spec import guest_mac
from ansible_collections.kiosk.lxc.plugins.module_utils.subid import ranges
from lxml import etree
from play import run_module

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="defines guests and namespaces: needs root")

SENDER_C = r"""
#include <linux/if_packet.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
  unsigned char buf[1600]; size_t n = 0; const char *h; unsigned v;
  if (argc != 3) return 2;
  for (h = argv[2]; h[0] && h[1] && n < sizeof buf; h += 2) { sscanf(h, "%2x", &v); buf[n++] = v; }
  int s = socket(AF_PACKET, SOCK_RAW, 0);
  if (s < 0) { perror("socket"); return 1; }
  struct sockaddr_ll a; memset(&a, 0, sizeof a);
  a.sll_family = AF_PACKET; a.sll_ifindex = if_nametoindex(argv[1]); a.sll_halen = 6; memcpy(a.sll_addr, buf, 6);
  if (sendto(s, buf, n, 0, (struct sockaddr *)&a, sizeof a) < 0) { perror("sendto"); return 1; }
  return 0;
}
"""

SNIFFER = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
s.settimeout(0.2)
seen, end = set(), time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        frame = s.recv(2048)
    except socket.timeout:
        continue
    for marker in sys.argv[3:]:
        if marker.encode() in frame:
            seen.add(marker)
print(" ".join(sorted(seen)))
"""

MARKERS = {"mac": "KSPOOF-MAC", "arp": "KSPOOF-ARP", "ip": "KSPOOF-IP", "legit": "KLEGIT-OWN"}
BROADCAST = b"\xff" * 6


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def arp_reply(src_mac: str, sha: str, spa: str, marker: str) -> bytes:
    """A gratuitous ARP reply 'spa is at sha', sent with Ethernet source src_mac."""
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + mac_bytes(sha) + socket.inet_aton(spa)
    arp += BROADCAST + socket.inet_aton(spa)
    return BROADCAST + mac_bytes(src_mac) + b"\x08\x06" + arp + marker.encode()


def udp(src_mac: str, src_ip: str, dst_ip: str, marker: str) -> bytes:
    payload = marker.encode()
    udp_hdr = struct.pack("!HHHH", 40000, 40000, 8 + len(payload), 0)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp_hdr) + len(payload), 1, 0, 64, 17, 0,
                      socket.inet_aton(src_ip), socket.inet_aton(dst_ip))  # fmt: skip
    words = struct.unpack("!10H", hdr)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    hdr = hdr[:10] + struct.pack("!H", ~total & 0xFFFF) + hdr[12:]
    return BROADCAST + mac_bytes(src_mac) + b"\x08\x00" + hdr + udp_hdr + payload


@pytest.fixture
def lab(libvirt_conn, guest_name, tmp_path):
    tag = guest_name.split("-")[0]
    work = Path(f"/var/tmp/kiosk-as-{guest_name}")
    bridge, port, netns = f"{tag}as"[:15], f"{tag}ao"[:15], f"{tag}-as-observer"
    net = "10.231.7"
    kiosk = f"{tag}-kiosk"
    names = {"a": f"{guest_name}-a", "b": f"{guest_name}-b"}
    macs = {k: guest_mac(f"{kiosk}/{n}") for k, n in names.items()}
    ips = {"a": f"{net}.11", "b": f"{net}.12", "obs": f"{net}.2"}
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    netns_was_mounted = os.path.ismount("/run/netns")
    try:
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        subprocess.run(["ip", "netns", "add", netns], check=True)
        subprocess.run(["ip", "link", "add", port, "master", bridge, "type", "veth", "peer", "name", "obs0",
                        "netns", netns], check=True)  # fmt: skip
        subprocess.run(["ip", "link", "set", port, "up"], check=True)
        for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{ips['obs']}/24", "dev", "obs0"],
                    ["ip", "link", "set", "obs0", "up"]):  # fmt: skip
            subprocess.run(["ip", "netns", "exec", netns, *cmd], check=True)
        base = guestlib.make_rootfs(work / "base", ". /etc/net-$(cat /etc/hostname)")
        (base / ".kiosk-rootfs.json").write_text(
            json.dumps({"key": "busybox", "arch": "amd64", "audio": "none", "user": "", "networkd": False})
        )
        (base / "etc" / "group").write_text("root:x:0:\naudio:x:29:\n")
        (base / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
        (base / "etc" / "ssh").mkdir()
        key = base / "etc" / "ssh" / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (tmp_path / "send.c").write_text(SENDER_C)
        subprocess.run(
            ["gcc", "-static", "-O1", "-o", str(base / "bin" / "send"), str(tmp_path / "send.c")], check=True
        )
        up = "ip link set lo up; ip link set eth0 up"
        (base / "etc" / f"net-{names['a']}").write_text(f"{up}; ip addr add {ips['a']}/24 dev eth0\n")
        frames = [
            arp_reply(macs["a"], macs["a"], ips["a"], MARKERS["mac"]),  # A's MAC as the source
            arp_reply(macs["b"], macs["b"], ips["a"], MARKERS["arp"]),  # "A's address is at B's MAC"
            udp(macs["b"], ips["a"], ips["obs"], MARKERS["ip"]),  # A's address as the source
            udp(macs["b"], ips["b"], ips["obs"], MARKERS["legit"]),  # its own: the control
        ]
        sends = "".join(f"  /bin/send eth0 {f.hex()} 2>>/out/send.err\n" for f in frames)
        (base / "etc" / f"net-{names['b']}").write_text(
            f"{up}; ip addr add {ips['b']}/24 dev eth0\n(while true; do\n{sends}  sleep 0.2\ndone) &\n"
        )
        yield {
            "work": work, "base": base, "bridge": bridge, "tag": tag, "kiosk": kiosk, "names": names,
            "macs": macs, "ips": ips, "netns": netns,
        }  # fmt: skip
    finally:
        subuid = ranges.read("/etc/subuid")["/etc/subuid"]
        starts = {e[1] for e in subuid if isinstance(e, tuple) and e[0] in names.values()}
        for name in names.values():
            ranges.ensure({"name": name, "state": "absent"})
        for dom in libvirt_conn.listAllDomains():
            if dom.name() in names.values():
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        guestlib.release_systemd_cgroups(list(names.values()), starts)
        subprocess.run(["ip", "netns", "delete", netns], check=False)
        subprocess.run(["ip", "link", "del", bridge], check=False)
        if not netns_was_mounted and os.path.ismount("/run/netns") and not os.listdir("/run/netns"):
            subprocess.run(["umount", "/run/netns"], check=False)
        shutil.rmtree(work, ignore_errors=True)


def args(lab, state: str = "running") -> dict:
    return {
        "kiosk": lab["kiosk"],
        "guests": [{"name": lab["names"][k], "state": state, "network": {"ip": lab["ips"][k]}} for k in ("a", "b")],
        "bases": {"": str(lab["base"])},
        "guest_dir": str(lab["work"] / "guests"),
        "defaults": {"init": "/init", "memory": "64MiB", "autostart": False, "bridge": lab["bridge"]},
        "network_wait": 0,
        "shutdown_timeout": 2,
    }


def observe(lab, seconds: float = 3) -> set[str]:
    proc = subprocess.run(
        ["ip", "netns", "exec", lab["netns"], sys.executable, "-c", SNIFFER, "obs0", str(seconds),
         *MARKERS.values()],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return set(proc.stdout.split())


def port_of(conn, name: str) -> str:
    return etree.fromstring(conn.lookupByName(name).XMLDesc(0)).find("devices/interface/target").get("dev")


def fdb_ports(lab, mac: str) -> set[str]:
    data = json.loads(subprocess.run(["bridge", "-j", "fdb", "show", "br", lab["bridge"]], capture_output=True,
                                     text=True, check=True).stdout)  # fmt: skip
    return {e["ifname"] for e in data if e.get("mac") == mac and "self" not in e.get("flags", [])}


def assert_no_spoofing(conn, lab) -> None:
    for key in ("a", "b"):
        guestlib.wait_for_file(lab["work"] / "guests" / lab["names"][key] / "out" / "started")
    seen = observe(lab)
    err = lab["work"] / "guests" / lab["names"]["b"] / "out" / "send.err"
    sent = err.read_text() if err.exists() else ""
    assert MARKERS["legit"] in seen, f"the observer saw nothing of B at all: {seen} {sent}"
    forged = {k for k in ("mac", "arp", "ip") if MARKERS[k] in seen}
    assert not forged, f"B's forged frames reached another namespace on the bridge: {sorted(forged)}"
    port_b = port_of(conn, lab["names"]["b"])
    assert port_b not in fdb_ports(lab, lab["macs"]["a"]), "the bridge learned A's MAC on B's port"
    # A still works: it answers the observer, through its own filtered port.
    # busybox-static (bindep.txt): this machine need not have iputils-ping.
    ping = subprocess.run(["ip", "netns", "exec", lab["netns"], guestlib.BUSYBOX, "ping", "-c", "2", "-W", "2",
                           lab["ips"]["a"]],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_a_guest_cannot_send_as_another_and_clones_have_their_own_identity(libvirt_conn, lab):
    check = run_module("kiosk.lxc.guest", args(lab), check=True, diff=True)
    real = run_module("kiosk.lxc.guest", args(lab), diff=True)
    assert real["_status"] == "changed", real.get("msg")
    assert_no_spoofing(libvirt_conn, lab)

    # The filter is in the definition: check mode predicted it, --diff shows it, a second run changes nothing.
    assert check["diff"] == real["diff"]
    assert any("filterref filter=\"clean-traffic\"" in d["after"] or "filterref filter='clean-traffic'" in d["after"]
               for d in real["diff"]), real["diff"]  # fmt: skip
    again_check = run_module("kiosk.lxc.guest", args(lab), check=True, diff=True)
    again = run_module("kiosk.lxc.guest", args(lab), diff=True)
    assert again_check["_status"] == "ok" and again["_status"] == "ok", (again_check, again)
    assert again["diff"] == []

    # A restart of B (libvirt alone, no Ansible) keeps B's port filtered.
    dom_b = libvirt_conn.lookupByName(lab["names"]["b"])
    dom_b.destroy()
    (lab["work"] / "guests" / lab["names"]["b"] / "out" / "started").unlink()
    dom_b.create()
    assert_no_spoofing(libvirt_conn, lab)

    # Each clone has its own machine-id and SSH host key, and both guests booted with them.
    base, guests = lab["base"], lab["work"] / "guests"
    ids = {p: (p / "etc" / "machine-id").read_text() for p in (base, *(guests / n for n in lab["names"].values()))}
    keys = {p: (p / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[1] for p in ids}
    assert len(set(ids.values())) == 3, ids
    assert len(set(keys.values())) == 3, keys

    # Removed with the guests: no filter binding of theirs is left.
    ports = {port_of(libvirt_conn, n) for n in lab["names"].values()}
    gone = run_module("kiosk.lxc.guest", args(lab, state="absent"))
    assert gone["_status"] == "changed", gone.get("msg")
    bound = {b.portDev() for b in libvirt_conn.listAllNWFilterBindings()}
    assert not ports & bound, bound
    ruleset = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    assert not [p for p in ports if p in ruleset], textwrap.shorten(ruleset, 2000)
