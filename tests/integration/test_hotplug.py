"""The hotplug agent on this machine: a card plugged into a running guest, with no Ansible run.

Real: libvirtd and a busybox guest configured by kiosk.lxc.sound_passthrough
(through ansible-playbook) with `missing: ignore` and a selector for a card
that is not there yet; the agent's own monitor, worker, libvirt reading,
cgroup v1 writes and mknod through /proc/<init>/root; the probes run by the
guest's init (so in its cgroup). Stand-ins (see tests/lib/hotplug_lab.py): udev
is a umockdev testbed that sends the uevents, and the card's nodes are
mknod-made (no driver behind them, so an allowed open() gives ENXIO).
The guest runs no sound server here; the kiosk VM scenario covers that.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import guest as guestlib
import hotplug_lab as lab
import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug.guests import init_pid

pytestmark = pytest.mark.skipif(
    not (shutil.which("umockdev-wrapper") and os.path.exists("/usr/lib/x86_64-linux-gnu/girepository-1.0")),
    reason="umockdev-wrapper or GObject introspection (gir1.2-umockdev-1.0, python3-gi) is missing",
)

# /dev/snd/... the guest creates; a witness node of card 1 made at a path the agent
# never touches shows the cgroup rule alone (EPERM while denied, ENXIO allowed).
PROBES = ["/dev/snd/controlC1", "/dev/snd/pcmC1D0p", "/dev/snd/seq", "/witness/controlC1", "/witness/controlC0"]


@pytest.fixture
def fake_host(tmp_path):
    return lab.make_fake_host(tmp_path)


def probe(root, i, expect):
    got = guestlib.probe_result(root, i, expect, timeout=10)
    assert guestlib.ERRNO_TEXT[expect] in got, (PROBES[i], expect, got)


def stand_in_pulseaudio(root: Path) -> str:
    """A process named pulseaudio run as the guest's kiosk user (uid 1000) and a pactl that logs its
    arguments to /out/pactl.log (a stand-in: no sound server can use mknod-made nodes); returns the
    init snippet that starts it."""
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nkiosk:x:1000:1000::/tmp:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nkiosk:x:1000:\n")
    (root / "out").chmod(0o777)
    server = root / "bin" / "pulseaudio"
    server.write_text("#!/bin/sh\nwhile true; do sleep 1; done\n")
    pactl = root / "usr" / "bin" / "pactl"
    pactl.parent.mkdir(parents=True, exist_ok=True)
    pactl.write_text(
        "#!/bin/sh\n"
        'echo "$(id -u) $*" >> /out/pactl.log\n'
        'if [ "$1" = list ]; then printf "12\\tmodule-alsa-card\\tdevice_id=1 name=kiosk-Audio\\n"; fi\n'
    )
    for script in (server, pactl):
        script.chmod(0o755)
    return "su -s /bin/sh kiosk -c /bin/pulseaudio &"


def test_plug_unplug_replug_reaches_the_running_guest(libvirt_conn, guest_name, busybox_rootfs, fake_host):
    root = busybox_rootfs(guestlib.probe_loop(PROBES, interval=0.05))
    (root / "init").write_text((root / "init").read_text().replace("\n(\n", f"\n{stand_in_pulseaudio(root)}\n(\n", 1))
    dom = lab.start_guests(libvirt_conn, fake_host, {guest_name: (root, {"usb": "0c76:161f"})})[guest_name]
    lab.witness(dom, {"controlC1": 10, "controlC0": 7})
    probe(root, 3, "EPERM")
    probe(root, 0, "ENOENT")
    agent = lab.Lab(fake_host["dev"], fake_host["tmp"] / "hotplug.log", only=[guest_name])
    try:
        for cycle in range(2):
            lab.plug_nodes(fake_host, True)
            answer = agent.plug()
            assert answer["settled"] and answer["ledger"] == [guest_name], (answer, agent.log())
            for i in (0, 1, 2, 3):
                probe(root, i, "ENXIO")
            probe(root, 4, "EPERM")  # card 0 is nobody's: it stays closed

            answer = agent.unplug()
            lab.plug_nodes(fake_host, False)
            assert answer["settled"] and answer["ledger"] == [], (cycle, answer, agent.log())
            probe(root, 3, "EPERM")
            probe(root, 0, "ENOENT")
            probe(root, 2, "ENOENT")  # the shared seq left with the guest's last card
        log = agent.log()
    finally:
        agent.close()
    assert f"attach card 1 (KT USB Audio) to guest '{guest_name}'" in log
    assert f"detach card 1 (KT USB Audio) from guest '{guest_name}'" in log
    # each action's line says how long after the udev event the guest had the card, and where it went
    attached = [line for line in log.splitlines() if f"attach card 1 (KT USB Audio) to guest '{guest_name}'" in line]
    assert attached and all(
        re.search(
            r"; \d+ ms after the event \(queue \d+, guests \d+, cards \d+, "
            r"cgroup and nodes \d+, sound server \d+\)$",
            line,
        )
        for line in attached
    ), attached
    # the guest's sound server was told, inside the guest, as its user (the kiosk user)
    told = (root / "out" / "pactl.log").read_text().splitlines()
    attach = "1000 load-module module-alsa-card device_id=1 name=kiosk-Audio card_name=alsa_card.kiosk-Audio tsched=yes"
    assert told == [attach, "1000 list modules short", "1000 unload-module 12"] * 2, told


def test_one_guest_failing_leaves_the_others_served_and_a_card_for_nobody_closed(
    libvirt_conn, guest_name, busybox_rootfs, fake_host
):
    """Guest 'broken' wants the card by name but its /dev/snd cannot be made; 'ok' wants it by
    port and gets it; 'other' wants another card (by serial) and stays closed."""
    names = {k: f"{guest_name}-{k}" for k in ("broken", "ok", "other")}
    roots = {k: busybox_rootfs(guestlib.probe_loop(PROBES, interval=0.05), name=k) for k in names}
    selectors = {
        "broken": {"name": "KT USB Audio"},
        "ok": {"path": "platform-xhci-hcd.0.auto-usb-0:1:1.0"},
        "other": {"serial": "nope"},
    }
    doms = lab.start_guests(libvirt_conn, fake_host, {names[k]: (roots[k], selectors[k]) for k in names})
    for dom in doms.values():
        lab.witness(dom, {"controlC1": 10, "controlC0": 7})
    init = init_pid(doms[names["broken"]].ID())
    Path(f"/proc/{init}/root/dev/snd").write_text("in the way\n")
    agent = lab.Lab(fake_host["dev"], fake_host["tmp"] / "hotplug.log", only=[f"{guest_name}-*"])
    try:
        lab.plug_nodes(fake_host, True)
        answer = agent.plug()
        log = agent.log()
        assert answer["settled"] and answer["ledger"] == [names["ok"]], (answer, log)
        probe(roots["ok"], 0, "ENXIO")
        probe(roots["ok"], 3, "ENXIO")
        probe(roots["broken"], 3, "EPERM")
        probe(roots["other"], 3, "EPERM")
        assert f"attach card 1 (KT USB Audio) to guest '{names['broken']}'" in log and "failed" in log, log
    finally:
        agent.close()


def test_a_card_udev_has_not_finished_waits_for_its_change(libvirt_conn, guest_name, busybox_rootfs, fake_host):
    """The card's add comes before udev set up its nodes (group, mode); the guest gets it with the change.

    Seen in the kiosk VM: attached on the add, a node copied into the guest was still root 0600 and the
    kiosk user's PulseAudio could not load the card. Here the card is added without SOUND_INITIALIZED
    and the agent's rescans are left idle long enough to see it would wait.
    """
    root = busybox_rootfs(guestlib.probe_loop(PROBES, interval=0.05))
    lab.start_guests(libvirt_conn, fake_host, {guest_name: (root, {"usb": "0c76:161f"})})
    agent = lab.Lab(fake_host["dev"], fake_host["tmp"] / "hotplug.log", only=[guest_name], rescan=1.0)
    try:
        lab.plug_nodes(fake_host, True)
        answer = agent.send("plug-add")
        assert answer["settled"] and answer["ledger"] == [], (answer, agent.log())
        time.sleep(2.5)  # two idle rescans: an unfinished card is not handed out by them either
        probe(root, 0, "ENOENT")
        answer = agent.send("plug-init")
        assert answer["settled"] and answer["ledger"] == [guest_name], (answer, agent.log())
        probe(root, 0, "ENXIO")
        log = agent.log()
    finally:
        agent.close()
    assert f"attach card 1 (KT USB Audio) to guest '{guest_name}'" in log
    assert "(on add /sys" not in log


def test_a_guest_started_after_the_plug_gets_the_card_on_the_rescan(
    libvirt_conn, guest_name, busybox_rootfs, fake_host
):
    """No event arrives for a card already plugged: the idle rescan hands it to the new guest."""
    agent = lab.Lab(fake_host["dev"], fake_host["tmp"] / "hotplug.log", only=[guest_name], rescan=1.0)
    try:
        lab.plug_nodes(fake_host, True)
        assert agent.plug()["ledger"] == []  # nobody wants it yet: it stays closed
        root = busybox_rootfs(guestlib.probe_loop(PROBES, interval=0.05))
        lab.start_guests(libvirt_conn, fake_host, {guest_name: (root, {"serial": "20180301"})})
        probe(root, 0, "ENXIO")
        probe(root, 2, "ENXIO")
        log = agent.log()
    finally:
        agent.close()
    assert "card 1 (KT USB Audio) matches no running guest: it stays closed" in log
    attached = f"attach card 1 (KT USB Audio) to guest '{guest_name}': controlC1, pcmC1D0c, pcmC1D0p, seq, timer"
    assert f"{attached} (on rescan)" in log


def test_a_guest_with_the_hosts_snd_bound_gets_only_the_cgroup_rules_and_keeps_its_static_card(
    libvirt_conn, guest_name, busybox_rootfs, fake_host
):
    """sound_passthrough gave the guest card 0 (present) and card 1 (later): it binds the host's snd
    directory, so card 1's nodes appear in the guest by themselves; the agent only opens the cgroup,
    and the unplug takes nothing of what libvirt gave for card 0 and the shared seq."""
    root = busybox_rootfs(guestlib.probe_loop([*PROBES, "/dev/snd/controlC0"], interval=0.05))
    selectors = [{"id": "PCH"}, {"usb": "0c76:161f"}]
    tasks = [
        {
            "kiosk.lxc.sound_passthrough": {
                "domain": guest_name,
                "cards": selectors,
                "missing": "ignore",
                "host_dev_dir": str(fake_host["dev"]),
                "host_udev_dir": str(fake_host["udev"]),
                "udev_data_dir": str(fake_host["tmp"] / "udev-data"),
                "shutdown_timeout": 1,
            }
        }
    ]
    libvirt_conn.defineXML(guestlib.domain_xml(guest_name, root)).create()
    (result,) = lab.umock.run_tasks(fake_host["recording"], tasks)
    assert result["_status"] == "changed" and [c["number"] for c in result["cards"]] == [0], result
    probe(root, 5, "ENXIO")  # card 0 through libvirt's own <hostdev>
    probe(root, 0, "ENOENT")
    agent = lab.Lab(fake_host["dev"], fake_host["tmp"] / "hotplug.log", only=[guest_name])
    try:
        lab.plug_nodes(fake_host, True)
        assert agent.plug()["ledger"] == [guest_name]
        probe(root, 0, "ENXIO")  # the host's node, seen through the bind, and now allowed
        agent.unplug()
        lab.plug_nodes(fake_host, False)
        probe(root, 0, "ENOENT")
        probe(root, 2, "ENXIO")  # seq stays: libvirt gave it, not the agent
        probe(root, 5, "ENXIO")
        log = agent.log()
    finally:
        agent.close()
    assert "mknod" not in log and "deny 'c 116:10 rw', 'c 116:8 rw', 'c 116:9 rw' in " in log, log
