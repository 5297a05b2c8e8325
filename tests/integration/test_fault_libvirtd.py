"""libvirtd killed (SIGKILL) in the middle of an lxc_domain run, then a re-run.

The machine's libvirtd is shared by every test session and must not be
killed, so this test starts a second libvirtd of its own
(libvirtd.PrivateDaemon): its own mount namespace, in which temporary
directories are bound over /run/libvirt, /var/lib/libvirt, /var/cache/libvirt,
/var/log/libvirt and /etc/libvirt, so its sockets, status files and
definitions never meet the shared daemon's. The modules reach it with
`uri: lxc:///system?socket=<its socket>`.

Where the kill lands: one play of two lxc_domain tasks, guests A then B. A
runs; the run is busy with B when libvirtd is killed. To make that
deterministic, the private daemon's LXC hook holds libvirtd at a given point
of B's operation and the test kills libvirtd while it waits there, so the
module is always blocked inside its libvirt call when the daemon dies:
- new B, at `start`: B defined, its controller not yet launched;
- new B, at `started`: B's controller and init run, its status file is
  written, the reply is not yet sent;
- B running and given more memory (define, then restart), at `stopped`: the
  restart's stop has killed B, libvirtd has not cleaned up after it.
Nothing here is mocked.

After the daemon is started again: the run that was cut off failed with one
line naming the guest and saying libvirtd went away; A runs on untouched (same
controller, same live definition, its definition file byte for byte as
before); B's definition is the one asked for; re-running the play converges,
and the run after that changes nothing; one controller per guest, none
orphaned or doubled.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import libvirtd
import pytest
from play import run_playbook

pytestmark = [
    pytest.mark.libvirt,
    pytest.mark.skipif(os.geteuid() != 0, reason="starts a libvirtd of its own: needs root"),
    pytest.mark.skipif(not shutil.which("libvirtd"), reason="libvirtd is not installed"),
]
MODULE = "kiosk.lxc.lxc_domain"


@pytest.fixture
def daemon():
    private = libvirtd.PrivateDaemon()
    try:
        yield private
    finally:
        private.close()


def _snapshot(daemon, conn, name: str) -> dict:
    dom = conn.lookupByName(name)
    return {
        "active": bool(dom.isActive()),
        "id": dom.ID(),
        "live": dom.XMLDesc(0) if dom.isActive() else None,
        "file": (daemon.root / "etc" / "lxc" / f"{name}.xml").read_bytes(),
    }


def _playbook(path: Path, guests: list[dict]) -> Path:
    """One play: an lxc_domain task per guest, in order (the guest role's shape)."""
    tasks = [{"name": g["name"], MODULE: g} for g in guests]
    path.write_text(json.dumps([{"hosts": "all", "gather_facts": False, "tasks": tasks}]), encoding="utf-8")
    return path


def _statuses(records: list[dict]) -> dict:
    return {r["task"]: r["status"] for r in records}


def _guest(daemon, busybox_rootfs, name: str) -> dict:
    # Init ends on SIGTERM once its sleep is killed too: libvirt's destroy (teardown) is then quick.
    root = busybox_rootfs("trap 'exit 0' TERM", name=name)
    args = {"name": name, "uri": daemon.uri, "rootfs": str(root), "init": "/init", "memory": 64}
    return {**args, "privnet": True, "shutdown_timeout": 2}


# case: (B before the run, where libvirtd is held and killed, what the cut run was doing,
#        whether B runs after the restart, what the re-run does to B)
CASES = {
    "new-guest-at-start": (None, "start", "start", False, ["start"]),
    "new-guest-at-started": (None, "started", "start", True, []),
    "restart-at-stopped": ("running", "stopped", "restart", False, ["start"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_libvirtd_killed_mid_run_then_rerun_converges(daemon, guest_name, busybox_rootfs, tmp_path, case):
    b_before, op, action, b_runs, rerun_actions = CASES[case]
    conn = daemon.start()
    a, b = f"{guest_name}-a", f"{guest_name}-b"
    guests = [_guest(daemon, busybox_rootfs, a), _guest(daemon, busybox_rootfs, b)]
    play = _playbook(tmp_path / "play.yml", guests)
    before_a = None
    if b_before:
        # A and B run; the run below gives B more memory: define, then restart.
        proc, _records = run_playbook(play)
        assert proc.returncode == 0, proc.stdout[-3000:]
        before_a = _snapshot(daemon, conn, a)
        guests[1]["memory"] = 96
        play = _playbook(play, guests)

    # The run: libvirtd is held at `op` of B and killed there. A new A is looked
    # at while B's start is held at `prepare` (at `started` and `stopped`
    # libvirtd 9.0 answers nobody while the hook runs, not even a new connection).
    holds = [op] if before_a else ["prepare", op]
    for hold in holds:
        daemon.hold(b, hold)
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(run_playbook, play)
        held = daemon.wait_held(b, holds[0], timeout=90, alive=lambda: not run.done())
        if held and before_a is None:
            before_a = _snapshot(daemon, conn, a)
            daemon.release(b, "prepare")
            held = daemon.wait_held(b, op, timeout=30, alive=lambda: not run.done())
        if held:
            daemon.kill()
        daemon.release(b, op)
        proc, records = run.result(timeout=120)
    conn.close()
    assert held, f"libvirtd never reached {op} of {b}:\n{proc.stdout[-3000:]}"
    assert before_a["active"]

    # That run fails, in one line naming the guest and saying what happened.
    expected = {a: "ok" if b_before else "changed", b: "failed"}
    assert proc.returncode != 0 and _statuses(records) == expected, proc.stdout[-3000:]
    msg = records[-1]["result"]["msg"]
    assert "\n" not in msg.strip() and "Traceback" not in msg, msg
    assert msg.startswith(f"Guest '{b}': libvirtd went away during {action} (") and "run again" in msg, msg
    assert records[-1]["result"]["actions_done"] == ["define"]

    conn = daemon.start()
    try:
        # A runs on: same controller, same live definition, its definition file byte for byte.
        assert _snapshot(daemon, conn, a) == before_a
        # B's definition, made before the kill, is kept; at `started` libvirtd reconnects to it.
        b_dom = conn.lookupByName(b)
        assert bool(b_dom.isActive()) == b_runs
        assert b_dom.maxMemory() == guests[1]["memory"] * 1024

        proc, records = run_playbook(play)
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert _statuses(records) == {a: "ok", b: "changed" if rerun_actions else "ok"}
        assert records[-1]["result"]["actions"] == rerun_actions
        proc, records = run_playbook(play)
        assert proc.returncode == 0 and _statuses(records) == {a: "ok", b: "ok"}, proc.stdout[-3000:]

        assert _snapshot(daemon, conn, a) == before_a
        assert conn.lookupByName(b).isActive()
        assert Path(guests[1]["rootfs"], "out", "started").read_text().strip() == "1"
        # One controller per running guest: none orphaned by the kill, none started twice.
        assert sorted(daemon.controllers().values()) == [a, b]
    finally:
        conn.close()
