# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""lxc_bridge: the bridge's dnsmasq - its config file, its process, its leases.

The process is found through its pid file and is only taken for ours when
/proc/<pid>/cmdline is dnsmasq with our --conf-file and it runs in this network
namespace; nothing else is ever signalled.
"""

from __future__ import annotations

import os
import signal
import time

from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

HEADER = "# Managed by kiosk.lxc.lxc_bridge: edits are overwritten.\n"
LEASE_TIME = "1h"


def render_config(spec) -> str:
    """dnsmasq's config for the bridge: DHCP + DNS on the bridge only."""
    net = spec.network
    lines = [
        HEADER.rstrip("\n"),
        f"interface={spec.name}",
        "except-interface=lo",
        "bind-interfaces",
        f"listen-address={spec.interface.ip}",
        "strict-order",
        "domain-needed",
        f"pid-file={spec.pid_path}",
        f"dhcp-leasefile={spec.leases_path}",
        f"dhcp-range={spec.dhcp_range[0]},{spec.dhcp_range[1]},{net.netmask},{LEASE_TIME}",
        "dhcp-no-override",
        "dhcp-authoritative",
    ]
    names = [spec.name]
    if spec.dns_domain:
        names.append(f"{spec.name}.{spec.dns_domain}")
        lines += [f"domain={spec.dns_domain}", f"local=/{spec.dns_domain}/"]
    lines.append(f"host-record={','.join(names)},{spec.interface.ip}")
    for lease in spec.dhcp_hosts:
        lines.append(f"dhcp-host={lease.mac},{lease.ip}" + (f",{lease.name}" if lease.name else ""))
    return "\n".join(lines) + "\n"


def read_file(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _same_netns(pid: int, proc_root: str) -> bool:
    try:
        return os.stat(f"{proc_root}/{pid}/ns/net").st_ino == os.stat(f"{proc_root}/self/ns/net").st_ino
    except OSError:
        return False


def find_running(pid_path: str, conf_path: str, proc_root: str = "/proc") -> int | None:
    """The pid of our dnsmasq for this bridge, or None."""
    text = read_file(pid_path)
    if not text or not text.strip().isdigit():
        return None
    pid = int(text.strip())
    try:
        with open(f"{proc_root}/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return None
    if not argv or os.path.basename(argv[0].decode(errors="replace")) != "dnsmasq":
        return None
    if f"--conf-file={conf_path}".encode() not in argv:
        return None
    return pid if _same_netns(pid, proc_root) else None


def start(run, spec, binary: str = "dnsmasq", timeout: float = 5.0) -> int:
    """Start dnsmasq (it daemonizes) and return its pid from the pid file."""
    rc, out, err = run([binary, f"--conf-file={spec.conf_path}"])
    if rc != 0:
        raise KioskError(
            f"Bridge '{spec.name}': dnsmasq did not start: {(err or out).strip() or f'exit code {rc}'}",
            rc=rc,
            stderr=err,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = find_running(spec.pid_path, spec.conf_path)
        if pid:
            return pid
        time.sleep(0.05)
    raise KioskError(f"Bridge '{spec.name}': dnsmasq started but wrote no pid file {spec.pid_path}")


def stop(pid: int, name: str, timeout: float = 5.0) -> None:
    """SIGTERM our dnsmasq and wait until it is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise KioskError(f"Bridge '{name}': dnsmasq (pid {pid}) did not exit within {timeout:g}s of SIGTERM")


def read_leases(path: str) -> list[dict]:
    """dnsmasq's lease file: '<expiry> <mac> <ip> <hostname|*> <client-id|*>' per line."""
    leases = []
    for line in (read_file(path) or "").splitlines():
        fields = line.split()
        if len(fields) < 4 or not fields[0].isdigit() or ":" not in fields[1]:
            continue
        leases.append(
            {
                "expiry": int(fields[0]),
                "mac": fields[1].lower(),
                "ip": fields[2],
                "hostname": None if fields[3] == "*" else fields[3],
            }
        )
    return leases
