"""Least-privilege guests on the real libvirtd: escape checks run by the guest itself.

The guest role provisions two busybox guests through ansible-playbook: one of
profile `confined` (the default) and one of profile `seed000`. Each guest's
init runs the same escape checks and writes the outcome to /out; the
confined guest must fail every one of them, and the seed000 guest shows that
the checks that can tell (mknod, capability bounding set) do succeed there,
so the checks are not vacuous.

The card is a host node of the ALSA major with no driver behind it
(docs/docsite/rst/guide_platform.rst, "Device access"): open() gives ENXIO
when the device cgroup and the file's owner allow it, EPERM when the cgroup
denies, EACCES when its mode denies.
Not covered here (no sound hardware and no kernel modules on this machine):
sound actually playing, and insmod's EPERM - this kernel has no module
support, so insmod fails with ENOSYS in every guest; the check then rests on
CAP_SYS_MODULE being out of the guest's bounding set.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import guest as guestlib
import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.domain.manage import edit_definition
from ansible_collections.kiosk.lxc.plugins.module_utils.sound import plan as soundplan
from ansible_collections.kiosk.lxc.plugins.module_utils.subid import ranges
from play import run_playbook

CAP_BITS = {"sys_module": 16, "sys_time": 25, "mknod": 27, "audit_control": 30, "mac_admin": 33}

# Each check: `chk NAME command...` writes /out/NAME.rc and /out/NAME.log.
ESCAPES = r"""
chk() { n=$1; shift; "$@" >/out/$n.log 2>&1; echo $? >/out/$n.rc; }
rm -f /tmp/esc-null; chk mknod mknod /tmp/esc-null c 1 3
chk other_card cat /probe/othercard
chk disk dd if=/probe/disk of=/dev/null bs=512 count=1
chk sys_write sh -c 'echo 500 > /sys/class/net/lo/tx_queue_len'
chk sys_remount mount -o remount,rw /sys
chk libvirt_sock ls /run/libvirt/libvirt-sock /var/run/libvirt/libvirt-sock
chk dbus_sock ls /run/dbus/system_bus_socket /var/run/dbus/system_bus_socket
chk insmod insmod /probe/garbage.ko
chk netlink ip link add {ifname} type dummy
# cgroup v1's release_agent runs as host root: only tried where the guest has its own ids.
if ! grep -qE '^ +0 +0 +4294967295' /proc/self/uid_map; then
  chk release_agent sh -c 'for f in /sys/fs/cgroup/*/release_agent; do echo /x > $f || exit 1; done; test -e "$f"'
fi
grep ' /sys/fs/cgroup/systemd ' /proc/self/mountinfo > /out/systemd_cgroup
ip -o link > /out/links 2>&1
grep CapBnd /proc/self/status | cut -f2 > /out/capbnd
cat /proc/self/uid_map > /out/uid_map
for p in /proc/[0-9]*; do cat $p/comm; done > /out/procs 2>/dev/null
ls -ln {card} > /out/card_node 2>&1
chk card_root cat {card}
chgrp 29 {card}; chmod 0660 {card}
chk card_audio su -s /bin/sh player -c 'cat {card}'
chk card_other su -s /bin/sh stranger -c 'cat {card}'
echo done > /out/done.tmp; mv /out/done.tmp /out/done
"""


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def lab(libvirt_conn, guest_name):
    """A bridge, a busybox base rootfs (with a rootfs manifest), a card node; all removed after."""
    tag = guest_name.split("-")[0]
    work = Path(f"/var/tmp/kiosk-lp-{guest_name}")
    bridge = f"{tag}lpbr"[:15]
    card_dir = Path(f"/dev/kt-snd-{tag}")
    _ip("link", "add", bridge, "type", "bridge")
    names = {"confined": f"{guest_name}-c", "seed000": f"{guest_name}-s"}
    try:
        base = guestlib.make_rootfs(work / "base", ESCAPES.replace("{card}", str(card_dir / "pcmC9D0p")))
        (base / ".kiosk-rootfs.json").write_text(
            json.dumps({"key": "busybox", "arch": "amd64", "audio": "none", "user": "", "networkd": False})
        )
        (base / "etc" / "passwd").write_text(
            "root:x:0:0::/:/bin/sh\nplayer:x:1000:1000::/tmp:/bin/sh\nstranger:x:1001:1001::/tmp:/bin/sh\n"
        )
        (base / "etc" / "group").write_text("root:x:0:\naudio:x:29:player\nplayer:x:1000:\nstranger:x:1001:\n")
        guestlib.mknod_char(base / "probe" / "othercard", 116, 78)
        disk = base / "probe" / "disk"
        os.mknod(disk, 0o666 | stat.S_IFBLK, os.makedev(254, 0))
        (base / "probe" / "garbage.ko").write_bytes(b"\x7fELF not a module\n" * 8)
        card = guestlib.mknod_char(card_dir / "pcmC9D0p", 116, 77, mode=0o660)
        os.chown(card, 0, 29)
        yield {"work": work, "base": base, "bridge": bridge, "names": names, "card": card, "tag": tag}
    finally:
        subuid = ranges.read("/etc/subuid")["/etc/subuid"]
        starts = {e[1] for e in subuid if isinstance(e, tuple) and e[0] in names.values()}
        for name in names.values():
            ranges.ensure({"name": name, "state": "absent"})
        _ip("link", "del", bridge, check=False)
        shutil.rmtree(card_dir, ignore_errors=True)
        for dom in libvirt_conn.listAllDomains():
            if dom.name() in names.values() and dom.isActive():
                dom.destroy()
        release_systemd_cgroups(names.values(), starts)
        shutil.rmtree(work, ignore_errors=True)


def release_systemd_cgroups(names, start_ids) -> None:
    """Remove the guests' own name=systemd cgroups, and give back what libvirt chowned.

    On a host without systemd libvirt chowns the root of the name=systemd
    hierarchy to an idmapped guest's root (docs/least-privilege.md); the
    test puts it back to root.
    """
    top = Path("/sys/fs/cgroup/systemd")
    for name in names:
        own = top / "kiosk-lxc" / name
        if own.is_dir():
            for d in sorted((p for p in own.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                d.rmdir()
            own.rmdir()
    with contextlib.suppress(OSError):
        (top / "kiosk-lxc").rmdir()  # only when no other guest has one
    if not top.is_dir():
        return
    for path in [top, *top.iterdir(), *(top / "init.scope").glob("*"), *(top / "system.slice").rglob("*")]:
        try:
            if path.name != "kiosk-lxc" and os.lstat(path).st_uid in start_ids:
                os.lchown(path, 0, 0)
        except OSError:
            pass


def _provision(lab) -> tuple:
    names = lab["names"]
    play = [
        {
            "hosts": "all",
            "gather_facts": False,
            "vars": {
                "kiosk_rootfs_bases": {"": str(lab["base"])},
                "kiosk_rootfs_packages": [],
                "kiosk_guest_dir": str(lab["work"] / "guests"),
                "kiosk_guest_bridge": lab["bridge"],
                "kiosk_guest_init": "/init",
                "kiosk_guest_memory": "64MiB",
                "kiosk_guest_network_wait": 0,
                "kiosk_guest_autostart": False,
                "kiosk_guests": [
                    {"name": names["confined"], "sound": {"missing": "ignore"}},
                    {"name": names["seed000"], "profile": "seed000"},
                ],
            },
            "roles": ["kiosk.lxc.guest"],
        }
    ]
    pb = lab["work"] / "play.yml"
    pb.write_text(json.dumps(play))
    return run_playbook(pb)


def _results(root: Path, timeout: float = 20) -> dict:
    guestlib.wait_for_file(root / "out" / "done", timeout)
    out = {}
    for f in (root / "out").iterdir():
        out[f.name] = f.read_text(errors="replace").strip()
    return out


def _caps(hexmask: str) -> set[str]:
    mask = int(hexmask, 16)
    return {name for name, bit in CAP_BITS.items() if mask >> bit & 1}


def test_confined_guest_fails_every_escape_and_seed000_does_not(libvirt_conn, lab):
    ifname = f"{lab['tag']}esc"[:15]
    lab["base"].joinpath("init").write_text(lab["base"].joinpath("init").read_text().replace("{ifname}", ifname))
    proc, _records = _provision(lab)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    confined, seed = lab["names"]["confined"], lab["names"]["seed000"]
    # A second run changes nothing (range, clone, definition, cgroup, sound unit).
    proc, records = _provision(lab)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert [r["task"] for r in records if r["status"] == "changed"] == []

    # The range is recorded in /etc/subuid and /etc/subgid, and the clone is owned by it.
    entries = {p: ranges.read(p)[p] for p in ("/etc/subuid", "/etc/subgid")}
    mine = [e for es in entries.values() for e in es if isinstance(e, tuple) and e[0] == confined]
    assert len(mine) == 2 and mine[0] == mine[1], entries
    start, count = mine[0][1], mine[0][2]
    assert start >= 100000 and count == 65536
    croot = lab["work"] / "guests" / confined
    assert croot.stat().st_uid == start and (croot / "bin" / "busybox").stat().st_gid == start
    assert (croot / "probe" / "othercard").stat().st_uid == start
    # The unit that gives the card nodes to the guest's audio group at boot (run by a
    # real systemd in the kiosk VM scenario), owned by the guest's root and enabled.
    unit = croot / "etc" / "systemd" / "system" / "kiosk-sound-nodes.service"
    assert "chgrp audio /dev/snd/*" in unit.read_text() and unit.stat().st_uid == start
    link = unit.parent / "sysinit.target.wants" / unit.name
    assert os.readlink(link) == "../kiosk-sound-nodes.service" and link.lstat().st_uid == start
    sroot = lab["work"] / "guests" / seed
    assert sroot.stat().st_uid == 0

    # The card, passed the way sound_passthrough does it (its plan's mutate), into both guests.
    (lab["work"] / "udev").mkdir()
    want = soundplan.desired(
        cards=[{"nodes": [{"path": str(lab["card"])}]}],
        shared_nodes=[],
        selectors=None,
        udev_dir=str(lab["work"] / "udev"),
    )
    for name, root in ((confined, croot), (seed, sroot)):
        for f in (root / "out").iterdir():
            f.unlink()
        result = edit_definition(libvirt_conn, name, soundplan.make_mutate(want), shutdown_timeout=2)
        assert result["restarted"], result
    # Under idmap the bind of the host's node directory is left out (its nodes would be nobody's).
    cxml = libvirt_conn.lookupByName(confined).XMLDesc(0)
    assert "<idmap>" in cxml and f"<target dir='{lab['card'].parent}'/>" not in cxml
    assert f"<char>{lab['card']}</char>" in cxml and "<privnet/>" in cxml and "<capabilities" not in cxml
    sxml = libvirt_conn.lookupByName(seed).XMLDesc(0)
    assert "<idmap>" not in sxml and "policy='allow'" in sxml and f"<target dir='{lab['card'].parent}'/>" in sxml

    c, s = _results(croot), _results(sroot)
    assert c["uid_map"].split() == ["0", str(start), str(count)]

    def failed(res, check, text=None):
        assert res[f"{check}.rc"] != "0", f"{check} succeeded in the guest: {res.get(check + '.log')}"
        if text:
            assert text in res[f"{check}.log"], res[f"{check}.log"]

    failed(c, "mknod", "Operation not permitted")
    failed(c, "other_card", guestlib.ERRNO_TEXT["EPERM"])
    failed(c, "disk", guestlib.ERRNO_TEXT["EPERM"])
    failed(c, "sys_write", "Read-only file system")
    failed(c, "sys_remount")
    failed(c, "libvirt_sock", "No such file or directory")
    failed(c, "dbus_sock", "No such file or directory")
    failed(c, "insmod")
    failed(c, "release_agent")
    if Path("/sys/fs/cgroup/systemd/cgroup.procs").exists() and not Path("/run/systemd/system").exists():
        # No systemd here: the guest's name=systemd cgroup is its own, not the host's shared root.
        assert f" /kiosk-lxc/{confined} /sys/fs/cgroup/systemd " in c["systemd_cgroup"], c["systemd_cgroup"]
    # libvirt's default policy (what profile confined asks for) takes these out of the bounding set; and all the
    # guest keeps are capabilities of its own user namespace, none over the host's.
    assert not _caps(c["capbnd"]), c["capbnd"]
    # Only the guest's own processes: its init and the shell running the checks.
    assert "libvirtd" not in c["procs"] and len(c["procs"].split()) <= 5, c["procs"]
    # Whatever the guest does to links, it does in its own network namespace.
    assert _ip("link", "show", ifname, check=False).returncode != 0
    assert lab["bridge"] not in c["links"] and "lxcbr0" not in c["links"]
    # The card: given to the guest's root by libvirt, usable by its audio group, no one else.
    assert guestlib.ERRNO_TEXT["ENXIO"] in c["card_root.log"], c["card_root.log"]
    assert guestlib.ERRNO_TEXT["ENXIO"] in c["card_audio.log"], c["card_audio.log"]
    assert guestlib.ERRNO_TEXT["EACCES"] in c["card_other.log"], c["card_other.log"]

    # seed000: the same checks tell - root there may mknod, and keeps every capability.
    assert s["mknod.rc"] == "0", s["mknod.log"]
    assert {"sys_module", "sys_time", "mknod"} <= _caps(s["capbnd"]), s["capbnd"]
    assert s["uid_map"].split() == ["0", "0", "4294967295"]


def test_subid_ranges_never_overlap_across_guests(tmp_path):
    """Through the module_utils on scratch files: two owners, then a re-run and a release."""
    uid, gid = tmp_path / "subuid", tmp_path / "subgid"
    uid.write_text("someone:100000:65536\n")
    gid.write_text("")
    kw = {"subuid": str(uid), "subgid": str(gid)}
    a = ranges.ensure({"name": "a"}, **kw)
    b = ranges.ensure({"name": "b"}, **kw)
    assert a["start"] == 165536 and b["start"] == 231072
    assert ranges.ensure({"name": "a"}, **kw)["changed"] is False
    ranges.ensure({"name": "a", "state": "absent"}, **kw)
    assert "a:" not in uid.read_text() and "someone:100000:65536" in uid.read_text()
    assert ranges.ensure({"name": "c"}, **kw)["start"] == 165536
