"""Benchmark playbooks/site.yml on this machine (root, a real libvirtd).

Measures, in one run:
- provisioning 1 guest from the cached base (the base itself is built once
  per definition; its build time is printed if this run had to build it),
- adding 9 more guests (10 in all): time per further guest,
- disk used by each guest's own rootfs (a clone of the base: copy-on-write
  on btrfs/XFS, a full copy elsewhere; the filesystem is printed),
- the no-op re-run of site.yml with 1 and with 10 guests, and its task count
  (PLAY RECAP ok=) with each, once the guests have finished booting (their
  cgroups nearly idle: a timer's run on a kiosk comes long after the boot),
- the floor: a playbook of gather_facts and one ping on the same host,
- the ratios against the targets of issue 17: no-op 10 guests <= 1.3x the
  1-guest no-op, 1-guest no-op <= 3x the floor, ok= differing by <= 2.

It uses its own bridge (ktbench0, 10.213.78.0/24, no NAT) and guests named
bench-NN, and removes them at the end.

    .venv/bin/python bench/site.py
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "lib"))
sys.path.insert(0, str(REPO / "build" / "collections"))

import guest as guestlib
import machine
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import device
from ansible_collections.kiosk.lxc.plugins.module_utils.common import shipped
from ansible_collections.kiosk.lxc.plugins.module_utils.subid import ranges
from play import local_kiosk, run_module, run_playbook

BRIDGE = "ktbench0"
GUESTS_DIR = Path("/var/lib/kiosk-lxc/guests")


def inventory(n: int) -> dict:
    guests = [
        {
            "name": f"bench-{i:02d}",
            "memory": "128MiB",
            "network": {"ip": f"10.213.78.{10 + i}"},
            "sound": {"missing": "ignore"},
        }
        for i in range(1, n + 1)
    ]
    return local_kiosk(BRIDGE, "10.213.78.1/24", guests)


def site(n: int, tmp: Path) -> tuple[float, int, int]:
    """(wall time, changed tasks, PLAY RECAP ok=) of one site.yml run with n guests."""
    inv = tmp / f"inv{n}.json"
    inv.write_text(json.dumps(inventory(n)))
    start = time.monotonic()
    proc, records = run_playbook(REPO / "playbooks" / "site.yml", inventory=str(inv))
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"site.yml failed with {n} guests:\n{proc.stdout[-3000:]}")
    return wall, sum(1 for r in records if r["status"] == "changed"), recap_ok(proc.stdout)


def guests_cpu_seconds(prefix: str = "bench-") -> float | None:
    """CPU time used so far by the bench guests' cgroups (cgroup v1 cpuacct or v2 cpu.stat), None if unreadable."""
    total, found = 0.0, False
    for usage in Path("/sys/fs/cgroup/cpuacct").glob(f"machine*/*{prefix}*/cpuacct.usage"):
        total += int(usage.read_text()) / 1e9
        found = True
    for stat in Path("/sys/fs/cgroup").glob(f"machine.slice/*{prefix}*/cpu.stat"):
        total += int(stat.read_text().split("usage_usec ")[1].split()[0]) / 1e6
        found = True
    return total if found else None


def settle(quiet: float = 0.05, window: float = 3.0, timeout: float = 240.0) -> float:
    """Wait until the guests, all together, use less than `quiet` of a CPU over `window` s: a no-op run on a
    kiosk comes long after its guests booted, and a boot still running would be timed with it. The wait."""
    start = time.monotonic()
    last = guests_cpu_seconds()
    while last is not None and time.monotonic() - start < timeout:
        time.sleep(window)
        now = guests_cpu_seconds()
        if now is None or now - last < quiet * window:
            break
        last = now
    return time.monotonic() - start


def recap_ok(stdout: str) -> int:
    found = re.search(r"^localhost\s+:\s+ok=(\d+)", stdout, re.MULTILINE)
    return int(found.group(1)) if found else -1


def floor(tmp: Path) -> float:
    """A playbook of gather_facts and one ping on the same host: what any run costs here."""
    inv = tmp / "inv-floor.json"
    inv.write_text(json.dumps(inventory(1)))
    pb = tmp / "floor.yml"
    play = [{"hosts": "kiosks", "gather_facts": True, "tasks": [{"name": "ping", "ansible.builtin.ping": {}}]}]
    pb.write_text(json.dumps(play))
    start = time.monotonic()
    proc, _records = run_playbook(pb, inventory=str(inv))
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"the floor playbook failed:\n{proc.stdout[-3000:]}")
    return wall


def disk_mib(path: Path) -> float:
    out = subprocess.run(["du", "-s", "--block-size=1M", str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[0])


def used_mib(path: str = "/var/lib") -> float:
    """Space in use on the filesystem: what clones really cost, shared extents counted once."""
    out = subprocess.run(["df", "--output=used", "--block-size=1M", path], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def cleanup(n: int) -> None:
    names = [f"bench-{i:02d}" for i in range(1, n + 1)]
    subuid = ranges.read("/etc/subuid")["/etc/subuid"]
    starts = {e[1] for e in subuid if isinstance(e, tuple) and e[0] in names}
    for i in range(1, n + 1):
        run_module("kiosk.lxc.lxc_domain", {"name": f"bench-{i:02d}", "state": "absent"})
        shutil.rmtree(GUESTS_DIR / f"bench-{i:02d}", ignore_errors=True)
        (GUESTS_DIR / f".kiosk-rootfs-bench-{i:02d}.json").unlink(missing_ok=True)  # the clone's record
        (GUESTS_DIR / f".lock-bench-{i:02d}").unlink(missing_ok=True)  # its build lock
    run_module("kiosk.lxc.hotplug_agent", {"state": "absent"})
    guestlib.release_systemd_cgroups(names, starts)  # the confined guests' own name=systemd cgroups
    run_module("kiosk.lxc.lxc_bridge", {"name": BRIDGE, "address": "10.213.78.1/24", "state": "absent"})


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("run as root: it provisions this machine")
    stat = ["stat", "-f", "-c", "%T", "/var/lib"]
    fs = subprocess.run(stat, check=True, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        # What site.yml installs machine-wide (the libvirt hook, the daemons' library, the guests' ids)
        # is put back as it was, as tests/integration/test_site.py does; the rootfs base stays (a cache).
        kept = machine.kept(device.hook_path(device.Host()), shipped.LIB_ROOT, "/etc/subuid", "/etc/subgid")
        with kept, contextlib.ExitStack() as stack:
            stack.callback(cleanup, 10)
            base = floor(tmp)
            used0 = used_mib()
            first, changed1, _ok = site(1, tmp)
            used1 = used_mib()
            settled1 = settle()
            noop1, noop1_changed, ok1 = site(1, tmp)
            ten, changed10, _ok = site(10, tmp)
            used10 = used_mib()
            settled10 = settle()
            noop10, noop10_changed, ok10 = site(10, tmp)
            disks = [disk_mib(GUESTS_DIR / f"bench-{i:02d}") for i in range(1, 11)]
    per_further = ten / 9
    print(f"filesystem of /var/lib: {fs}")
    print("| what | wall time | changed tasks |")
    print("|---|---|---|")
    print(f"| site.yml, 1st guest from the cached base | {first:.1f} s | {changed1} |")
    print(f"| site.yml no-op re-run, 1 guest | {noop1:.1f} s | {noop1_changed} |")
    print(f"| site.yml adding guests 2-10 | {ten:.1f} s ({per_further:.1f} s per further guest) | {changed10} |")
    print(f"| site.yml no-op re-run, 10 guests | {noop10:.1f} s ({noop10 / 10:.2f} s per guest) | {noop10_changed} |")
    print(f"| floor: gather_facts + ping | {base:.1f} s | - |")
    print(f"before each no-op re-run, waited for the guests to finish booting: {settled1:.0f} s, {settled10:.0f} s")
    print(f"PLAY RECAP ok= of the no-op re-run: 1 guest {ok1}, 10 guests {ok10} (target: differ by <= 2)")
    further = f"{min(disks[1:]):.0f}-{max(disks[1:]):.0f}"
    print(f"du of each guest rootfs: first {disks[0]:.0f} MiB, further ones {further} MiB")
    each = (used10 - used1) / 9
    print(f"filesystem space used: 1st guest +{used1 - used0:.0f} MiB, guests 2-10 +{each:.0f} MiB each")
    print(
        f"ratios: no-op/first = {noop1 / first:.2f}; no-op 10/no-op 1 = {noop10 / noop1:.2f} (target <= 1.3);"
        f" no-op 1/floor = {noop1 / base:.2f} (target <= 3)"
    )


if __name__ == "__main__":
    main()
