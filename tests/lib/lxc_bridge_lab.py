"""A small network lab for lxc_bridge tests, made only of namespaces the test creates.

Three network namespaces with unique names:
- `host`: where the module runs (ansible-playbook under `ip netns exec`), with
  `up0` 198.51.100.1/24 towards the uplink and `cv0`, the guest's veth end;
- `guest`: `cv1` (the DHCP client's interface, with a chosen MAC);
- `uplink`: `up1` 198.51.100.2/24, standing in for the outside world.
Nothing here touches the machine's own interfaces or firewall. `close()` ends
only the processes running inside these namespaces, then deletes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from play import ansible_env

UPLINK_HOST, UPLINK_PEER = "198.51.100.1", "198.51.100.2"
BIN = Path(sys.executable).parent


NETNS_DIR = "/run/netns"


def sh(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, **kw)


class Lab:
    def __init__(self, guest_mac: str = "52:54:00:aa:00:10"):
        tag = secrets.token_hex(3)
        self.tag = tag
        self.host, self.guest, self.uplink = (f"kbr{tag}{x}" for x in "hgu")
        self.guest_mac = guest_mac
        self.made: list[str] = []
        # `ip netns add` makes /run/netns a mount point of its own and leaves it: undone in close().
        self.netns_was_mounted = os.path.ismount(NETNS_DIR)
        try:
            for ns in (self.host, self.guest, self.uplink):
                sh("ip", "netns", "add", ns)
                self.made.append(ns)
                self.ns(ns, "ip", "link", "set", "lo", "up")
            self.ns(self.host, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", self.uplink)
            self.ns(self.host, "ip", "address", "add", f"{UPLINK_HOST}/24", "dev", "up0")
            self.ns(self.host, "ip", "link", "set", "up0", "up")
            self.ns(self.uplink, "ip", "address", "add", f"{UPLINK_PEER}/24", "dev", "up1")
            self.ns(self.uplink, "ip", "link", "set", "up1", "up")
            self.ns(self.host, "ip", "link", "add", "cv0", "type", "veth", "peer", "name", "cv1", "netns", self.guest)
            self.ns(self.guest, "ip", "link", "set", "cv1", "address", guest_mac)
            self.ns(self.guest, "ip", "link", "set", "cv1", "up")
            self.ns(self.host, "ip", "link", "set", "cv0", "up")
        except BaseException:
            self.close()
            raise

    def ns(self, ns: str, *argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", ns, *argv, check=check, **kw)

    def close(self) -> None:
        for ns in self.made:
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGTERM)
            deadline = time.monotonic() + 5
            while sh("ip", "netns", "pids", ns, check=False).stdout.split() and time.monotonic() < deadline:
                time.sleep(0.05)
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for ns in reversed(self.made):
            sh("ip", "netns", "delete", ns, check=False)
        self.made = []
        if not self.netns_was_mounted and os.path.ismount(NETNS_DIR) and not os.listdir(NETNS_DIR):
            sh("umount", NETNS_DIR, check=False)

    # ------------------------------------------------------------ the module
    def run_module(self, args: dict, *, check: bool = False, diff: bool = False) -> dict:
        results = self.run_tasks([args], check=check, diff=diff)
        return results[-1]

    def run_tasks(self, task_args: list, *, check: bool = False, diff: bool = False) -> list[dict]:
        """One playbook, one task per entry (failures do not stop the play).

        An entry is the args of kiosk.lxc.lxc_bridge, or (module, args[, task keywords]),
        e.g. ("kiosk.lxc.lxc_bridge", args, {"check_mode": True, "diff": True}).
        """
        tasks = []
        for i, entry in enumerate(task_args):
            module, args, extra = ("kiosk.lxc.lxc_bridge", entry, {}) if isinstance(entry, dict) else (*entry, {})[:3]
            tasks.append({"name": f"task {i}", module: args, "ignore_errors": True, **extra})
        play = [{"name": "lxc_bridge under test", "hosts": "all", "gather_facts": False, "tasks": tasks}]
        with tempfile.TemporaryDirectory() as tmp:
            pb, rec = Path(tmp) / "play.yml", Path(tmp) / "rec.jsonl"
            pb.write_text(json.dumps(play), encoding="utf-8")
            cmd = [
                str(BIN / "ansible-playbook"), "-i", "localhost,",
                "-e", f"ansible_python_interpreter={sys.executable}",
                "-e", "ansible_connection=local", str(pb),
            ] + (["--check"] if check else []) + (["--diff"] if diff else [])  # fmt: skip
            proc = self.ns(self.host, *cmd, check=False, env=ansible_env(str(rec)))
            records = [json.loads(x) for x in rec.read_text().splitlines() if x.strip()] if rec.exists() else []
        if len(records) != len(task_args):
            raise AssertionError(f"ansible-playbook rc={proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        out = []
        for r in records:
            res = dict(r["result"])
            res["_status"] = r["status"]
            out.append(res)
        return out

    # ------------------------------------------------------------ observations
    def links(self) -> dict:
        """`ip -j` view of the host namespace: name -> {ifindex, kind, addresses, up}."""
        data = json.loads(self.ns(self.host, "ip", "-j", "-d", "address", "show").stdout)
        return {
            d["ifname"]: {
                "ifindex": d["ifindex"],
                "kind": d.get("linkinfo", {}).get("info_kind"),
                "up": "UP" in d.get("flags", []),
                "addresses": [
                    f"{a['local']}/{a['prefixlen']}" for a in d.get("addr_info", []) if a["family"] == "inet"
                ],
                "master": d.get("master"),
            }
            for d in data
        }

    def ruleset(self) -> str:
        return self.ns(self.host, "nft", "list", "ruleset").stdout

    def dhcp(self, timeout: int = 10) -> dict:
        """Run busybox udhcpc once in the guest namespace; returns what the server offered."""
        with tempfile.TemporaryDirectory() as tmp:
            script, envfile = Path(tmp) / "script", Path(tmp) / "env"
            script.write_text(
                "#!/bin/sh\n"
                'case "$1" in bound|renew)\n'
                '  ip address flush dev "$interface"\n'
                '  ip address add "$ip/$mask" dev "$interface"\n'
                '  [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"\n'
                f"  env > {envfile}.tmp && mv {envfile}.tmp {envfile} ;;\n"
                "esac\n"
            )
            script.chmod(0o755)
            proc = self.ns(
                self.guest, "busybox", "udhcpc", "-i", "cv1", "-n", "-q", "-f", "-t", "5", "-T", "1",
                "-s", str(script), check=False, timeout=timeout + 20,
            )  # fmt: skip
            if not envfile.exists():
                raise AssertionError(f"udhcpc got no lease (rc={proc.returncode}): {proc.stdout}{proc.stderr}")
            env = dict(line.split("=", 1) for line in envfile.read_text().splitlines() if "=" in line)
        return env

    def resolve(self, name: str, server: str) -> str:
        """busybox nslookup from the guest namespace, stdout+stderr."""
        proc = self.ns(self.guest, "busybox", "nslookup", name, server, check=False, timeout=15)
        return proc.stdout + proc.stderr

    def connect_out(self, port: int = 8080) -> str:
        """TCP connect from the guest to the uplink namespace; the source address the uplink saw."""
        listener = subprocess.Popen(
            ["ip", "netns", "exec", self.uplink, sys.executable, "-c",
             "import socket,sys\n"
             "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
             f"s.bind(('{UPLINK_PEER}', {port})); s.listen(1); print('ready', flush=True)\n"
             "s.settimeout(10); c, peer = s.accept(); print(peer[0], flush=True)"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert listener.stdout.readline().strip() == "ready"
            self.ns(
                self.guest, sys.executable, "-c",
                f"import socket; socket.create_connection(('{UPLINK_PEER}', {port}), timeout=5).close()",
                timeout=15,
            )  # fmt: skip
            return listener.stdout.readline().strip()
        finally:
            listener.kill()
            listener.wait()
