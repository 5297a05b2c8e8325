"""Benchmark kiosk.lxc.lxc_domain: define and start N busybox guests, then re-run the play.

Not a test: it prints wall times. For each N (default 1 and 10) one playbook
with one looped lxc_domain task runs twice through ansible-playbook against
the real libvirtd on lxc:///system: the first run defines and starts every
guest, the re-run must change nothing. The guests (named kbench-<random>-<i>)
are destroyed and undefined at the end, also after a failure.

    .venv/bin/python bench/lxc_domain.py [N ...]
"""

from __future__ import annotations

import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "lib"))
sys.path.insert(0, str(REPO / "build" / "collections"))

import guest as guestlib
import libvirt
import play


def run_play(playbook: Path) -> tuple[float, list[dict]]:
    started = time.monotonic()
    proc, records = play.run_playbook(playbook)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"ansible-playbook failed (rc={proc.returncode}):\n{proc.stdout[-3000:]}")
    return elapsed, records


def bench(n: int, workdir: Path, conn) -> dict:
    prefix = f"kbench-{secrets.token_hex(2)}-"
    guests = []
    for i in range(n):
        root = guestlib.make_rootfs(workdir / f"{prefix}{i}")
        guests.append({"name": f"{prefix}{i}", "rootfs": str(root)})
    task = {
        "name": "guests",
        "kiosk.lxc.lxc_domain": {
            "name": "{{ item.name }}",
            "rootfs": "{{ item.rootfs }}",
            "init": "/init",
            "memory": 64,
            "shutdown_timeout": 1,
        },
        "loop": guests,
    }
    playbook = workdir / f"bench-{n}.yml"
    playbook.write_text(json.dumps([{"hosts": "all", "gather_facts": False, "tasks": [task]}]), encoding="utf-8")
    try:
        first, rec1 = run_play(playbook)
        again, rec2 = run_play(playbook)
        active = sum(conn.lookupByName(g["name"]).isActive() for g in guests)
    finally:
        for g in guests:
            try:
                dom = conn.lookupByName(g["name"])
            except libvirt.libvirtError:
                continue
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    changed = [r["result"].get("changed") for r in rec1 + rec2]
    return {
        "n": n,
        "first_run_s": first,
        "noop_rerun_s": again,
        "noop_per_guest_s": again / n,
        "running_after_first": active,
        "rerun_changed": bool(rec2[-1]["result"].get("changed")) if rec2 else None,
        "task_results": changed,
    }


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [1, 10]
    conn = libvirt.open("lxc:///system")
    print(f"{'N':>3} {'first run':>10} {'no-op re-run':>13} {'re-run/guest':>13}  rerun changed")
    with tempfile.TemporaryDirectory(prefix="kbench-") as tmp:
        for n in sizes:
            r = bench(n, Path(tmp), conn)
            print(
                f"{r['n']:>3} {r['first_run_s']:>9.2f}s {r['noop_rerun_s']:>12.2f}s "
                f"{r['noop_per_guest_s']:>12.2f}s  {r['rerun_changed']}"
                f"  (running after first run: {r['running_after_first']}/{n})"
            )
    conn.close()


if __name__ == "__main__":
    main(sys.argv[1:])
