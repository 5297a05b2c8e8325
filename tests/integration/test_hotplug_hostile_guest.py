"""A hostile guest against the hotplug agent: the guest's own pactl, fake sound servers, no answer.

The agent tells a guest's sound server about a card by running the guest's
own `pactl` (or `systemctl`) through nsenter. Everything that binary does is
the guest's: the attacks here are mounted for real in busybox guests on the
real libvirtd, against the real agent under umockdev (tests/lib/hotplug_lab.py):

- the guest's pactl opens a node of a card the guest is denied: run in the
  guest's cgroup it gets EPERM (the device cgroup), outside it ENXIO (no
  driver behind the node, so the host's cgroup let it through);
- a pactl that never answers and leaves a process in a session of its own:
  the agent's timeout ends both, not only nsenter;
- 200 processes named pulseaudio in one guest, each with a pactl that never
  answers: the plug still reaches every guest within the driver's 10 s, and
  the fake servers are not all tried.

Stand-ins: the cards are mknod-made nodes and udev is umockdev's testbed
(as in test_hotplug.py); the "sound servers" are processes named pulseaudio,
run as the guest's kiosk user (uid 1000 in the guest's /etc/passwd).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import guest as guestlib
import hotplug_lab as lab
import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug.guests import init_pid, ns_link

pytestmark = pytest.mark.skipif(
    not (shutil.which("umockdev-wrapper") and os.path.exists("/usr/lib/x86_64-linux-gnu/girepository-1.0")),
    reason="umockdev-wrapper or GObject introspection (gir1.2-umockdev-1.0, python3-gi) is missing",
)

KIOSK_UID = 1000
CARD = {"usb": "0c76:161f"}


@pytest.fixture
def fake_host(tmp_path):
    return lab.make_fake_host(tmp_path)


def hostile_guest(root: Path, pactl: str, servers: int = 1) -> Path:
    """The busybox rootfs with a kiosk user, `servers` processes named pulseaudio run as it, and pactl.

    Each fake server is busybox's sleep under the name pulseaudio (a link to
    busybox, started with argv[0] `sleep`): one process each, no CPU.
    """
    (root / "etc" / "passwd").write_text(f"root:x:0:0::/root:/bin/sh\nkiosk:x:{KIOSK_UID}:{KIOSK_UID}::/tmp:/bin/sh\n")
    (root / "etc" / "group").write_text(f"root:x:0:\nkiosk:x:{KIOSK_UID}:\n")
    (root / "bin" / "pulseaudio").symlink_to("busybox")
    script = root / "usr" / "bin" / "pactl"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text("#!/bin/sh\n" + pactl)
    script.chmod(0o755)
    (root / "out").chmod(0o777)
    start = (
        f"su -s /bin/sh kiosk -c 'i=0; while [ $i -lt {servers} ]; do"
        " (exec -a sleep /bin/pulseaudio 100000 &); i=$((i+1)); done'\n"
    )
    init = root / "init"
    init.write_text(init.read_text().replace("\n(\n", f"\n{start}(\n", 1))
    return root


def guest_processes(dom, argv: list[str]) -> list[int]:
    """Host pids of the guest's processes (in its pid namespace) whose command line is argv."""
    want_ns = ns_link(init_pid(dom.ID()), "pid")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path("/proc", entry, "cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        if [c.decode(errors="replace") for c in cmdline] == argv and ns_link(int(entry), "pid") == want_ns:
            found.append(int(entry))
    return found


def wait_for_servers(dom, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(guest_processes(dom, ["sleep", "100000"])) < count:
        assert time.monotonic() < deadline, f"the guest started fewer than {count} fake servers"
        time.sleep(0.1)


def test_the_guests_pactl_runs_in_the_guests_cgroup(libvirt_conn, guest_name, busybox_rootfs, fake_host):
    """The guest's pactl opens card 0's node, which the guest is denied: EPERM, as for any guest process."""
    pactl = "cat /witness/controlC0 </dev/null >/dev/null 2>/out/pactl.dev.tmp; mv /out/pactl.dev.tmp /out/pactl.dev\n"
    root = hostile_guest(busybox_rootfs(guestlib.probe_loop(["/witness/controlC0"], interval=0.05)), pactl)
    dom = lab.start_guests(libvirt_conn, fake_host, {guest_name: (root, CARD)})[guest_name]
    lab.witness(dom, {"controlC0": 7})
    assert guestlib.ERRNO_TEXT["EPERM"] in guestlib.probe_result(root, 0, "EPERM")  # the guest's own init
    wait_for_servers(dom, 1)
    agent = lab.Lab(fake_host["dev"], fake_host["tmp"] / "hotplug.log", only=[guest_name])
    try:
        lab.plug_nodes(fake_host, True)
        answer = agent.plug()
        assert answer["settled"] and answer["ledger"] == [guest_name], (answer, agent.log())
        got = guestlib.wait_for_file(root / "out" / "pactl.dev")
    finally:
        agent.close()
    assert guestlib.ERRNO_TEXT["EPERM"] in got, f"the guest's pactl opened a node its guest is denied: {got!r}"


def test_a_pactl_that_never_answers_is_ended_with_all_it_started(libvirt_conn, guest_name, busybox_rootfs, fake_host):
    """pactl starts a process in a new session (out of nsenter's process group), then never returns."""
    pactl = "setsid sleep 1001 </dev/null >/dev/null 2>&1 &\nexec sleep 1002\n"
    root = hostile_guest(busybox_rootfs(guestlib.probe_loop(["/dev/snd/controlC1"], interval=0.05)), pactl)
    dom = lab.start_guests(libvirt_conn, fake_host, {guest_name: (root, CARD)})[guest_name]
    wait_for_servers(dom, 1)
    agent = lab.Lab(fake_host["dev"], fake_host["tmp"] / "hotplug.log", only=[guest_name])
    try:
        lab.plug_nodes(fake_host, True)
        agent.plug()
        deadline = time.monotonic() + 40
        while f"to guest '{guest_name}'" not in agent.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        log = agent.log()
        left = {n: guest_processes(dom, ["sleep", n]) for n in ("1001", "1002")}
    finally:
        agent.close()
    assert f"attach card 1 (KT USB Audio) to guest '{guest_name}'" in log, log
    assert left == {"1001": [], "1002": []}, f"the timed-out pactl left processes in the guest: {left}\n{log}"


def test_200_fake_servers_in_one_guest_do_not_stall_the_others(libvirt_conn, guest_name, busybox_rootfs, fake_host):
    """Guest 'noisy' runs 200 processes named pulseaudio and a pactl that never answers; 'quiet' has none.

    One plug must reach both guests within the lab driver's 10 s, and the agent must not try every
    fake server (each try costs a timeout).
    """
    names = {k: f"{guest_name}-{k}" for k in ("noisy", "quiet")}
    noisy = hostile_guest(
        busybox_rootfs(guestlib.probe_loop(["/dev/snd/controlC1"], interval=0.05), name="noisy"),
        'echo "$*" >> /out/pactl.log\nexec sleep 1003\n',
        servers=200,
    )
    quiet = busybox_rootfs(guestlib.probe_loop(["/dev/snd/controlC1"], interval=0.05), name="quiet")
    doms = lab.start_guests(libvirt_conn, fake_host, {names["noisy"]: (noisy, CARD), names["quiet"]: (quiet, CARD)})
    wait_for_servers(doms[names["noisy"]], 200, timeout=60)
    agent = lab.Lab(fake_host["dev"], fake_host["tmp"] / "hotplug.log", only=[f"{guest_name}-*"])
    try:
        lab.plug_nodes(fake_host, True)
        answer = agent.plug()
        log = agent.log()
        quiet_probe = guestlib.probe_result(quiet, 0, "ENXIO", timeout=2)
    finally:
        agent.close()
    assert answer["settled"] and answer["ledger"] == sorted(names.values()), (answer, log)
    assert guestlib.ERRNO_TEXT["ENXIO"] in quiet_probe, quiet_probe
    tried = (noisy / "out" / "pactl.log").read_text().splitlines() if (noisy / "out" / "pactl.log").exists() else []
    assert 1 <= len(tried) <= 4, f"the agent ran the guest's pactl {len(tried)} times"
