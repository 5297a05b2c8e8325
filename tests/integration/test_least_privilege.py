"""Least-privilege guests on the real libvirtd: escape checks run by the guest itself.

The guest role provisions two busybox guests through ansible-playbook: one of
profile `confined` (the default) and one of profile `seed000` (UNSAFE: root
there is root on the host). Each guest's init runs the same escape checks
(ESCAPES) and writes the outcome to /out. The confined guest must fail every
one of them, for the reason named in CONFINED. A check that cannot succeed
anywhere proves nothing, so each one also has a control (CONTROL) that shows
the same check getting through where the escape is possible: in the seed000
guest, on the host itself, or, for the device cgroup, the given card's node
opening in the same guest.

The card is a host node of the ALSA major with no driver behind it
(docs/docsite/rst/guide_platform.rst, "Device access"): open() gives ENXIO
when the device cgroup and the file's owner allow it, EPERM when the cgroup
denies, EACCES when its mode denies. In the guest, libvirt makes the node
mode 0700 for the guest's root; the guest's init runs the ExecStart of the
unit the guest role wrote (kiosk-sound-nodes.service, which systemd runs at
boot in a real guest) and the audio group can open it afterwards, not before.

Not covered here (no sound hardware and no kernel modules on this machine):
sound actually playing, and insmod where the kernel has no module support
(ENOSYS for everyone, so the insmod tests skip and say so; the guest's
bounding set without CAP_SYS_MODULE is checked instead). The kiosk VM
scenarios (molecule/shared/verify.yml) load a real module of their kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import guest as guestlib
import libvirtd
import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.domain.manage import edit_definition
from ansible_collections.kiosk.lxc.plugins.module_utils.sound import plan as soundplan
from ansible_collections.kiosk.lxc.plugins.module_utils.subid import ranges
from play import run_playbook

CAP_BITS = {"sys_module": 16, "sys_time": 25, "mknod": 27, "audit_control": 30, "mac_admin": 33}
UNIT = "/etc/systemd/system/kiosk-sound-nodes.service"
MODULES = Path("/proc/modules").exists()

# The escape checks: name -> command, run by the guest's root (and, for CONTROL "host", by this machine's).
CHECKS = {
    "mknod": "mknod /tmp/esc-null c 1 3",
    "other_card": "cat /probe/othercard",
    "disk": "dd if=/probe/disk of=/dev/null bs=512 count=1",
    # The remount first: where it gets through (seed000), the write does too.
    "sys_remount": "mount -o remount,rw /sys",
    "sys_write": "sh -c 'echo 500 > /sys/class/net/lo/tx_queue_len'",
    "libvirt_sock": "ls /run/libvirt/libvirt-sock /var/run/libvirt/libvirt-sock",
    "dbus_sock": "ls /run/dbus/system_bus_socket /var/run/dbus/system_bus_socket",
    "insmod": "insmod /probe/garbage.ko",
    # Write each visible cgroup v1 release_agent with what it holds: the write is refused or it changes nothing.
    "release_agent": "sh -c 'set -- /sys/fs/cgroup/*/release_agent; "
    'test -e "$1" || { echo no release_agent visible; exit 1; }; '
    'for f; do echo "$(cat $f)" > $f || exit 1; done\'',
}
# What the confined guest gets for each, by errno text (busybox's messages).
CONFINED = {
    "mknod": "Operation not permitted",
    "other_card": "Operation not permitted",
    "disk": "Operation not permitted",
    "sys_write": "Read-only file system",
    "sys_remount": "permission denied",  # busybox mount's words for EPERM
    "libvirt_sock": "No such file or directory",
    "dbus_sock": "No such file or directory",
    "insmod": "Operation not permitted",
    # Owned by host root, which the guest's ids do not map (EACCES); or refused by the kernel (since 5.17).
    "release_agent": ("Permission denied", "Operation not permitted"),
}
# Where each check is seen getting through: "seed000" (that guest's rc is 0), "host" (the command run on this
# machine, outside any guest, succeeds), "card" (the given card's node opens past the device cgroup: ENXIO).
CONTROL = {
    "mknod": "seed000",
    "other_card": "card",
    "disk": "card",
    "sys_write": "seed000",
    "sys_remount": "seed000",
    "libvirt_sock": "host",
    "dbus_sock": "host",
    "insmod": "seed000",
    "release_agent": "seed000",
}

ESCAPES = (
    r"""
chk() { n=$1; shift; "$@" >/out/$n.log 2>&1; echo $? >/out/$n.rc; }
rm -f /tmp/esc-null
"""
    + "".join(f"chk {name} {cmd}\n" for name, cmd in CHECKS.items())
    + r"""
# A link made in the guest stays in the guest's network namespace.
chk netlink ip link add {ifname} type bridge
grep ' /sys/fs/cgroup/systemd ' /proc/self/mountinfo > /out/systemd_cgroup
ip -o link > /out/links 2>&1
grep CapBnd /proc/self/status | cut -f2 > /out/capbnd
cat /proc/self/uid_map > /out/uid_map
for p in /proc/[0-9]*; do cat $p/comm; done > /out/procs 2>/dev/null
ls -ln {card} > /out/card_node 2>&1
chk card_root cat {card}
chk card_audio_before su -s /bin/sh player -c 'cat {card}'
# What systemd does at boot in a guest the role gave a card: the role's unit, on the guest's /dev/snd.
if [ -f {unit} ]; then
  mkdir -p /dev/snd && ln -f {card} /dev/snd/
  chk unit sh -c "$(sed -n 's/^ExecStart=//p' {unit})"
fi
chk card_audio su -s /bin/sh player -c 'cat {card}'
chk card_other su -s /bin/sh stranger -c 'cat {card}'
echo done > /out/done.tmp; mv /out/done.tmp /out/done
"""
)


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def lab(libvirt_daemon, module_guest_name):
    """A bridge, a busybox base rootfs (with a rootfs manifest), a card node; all removed after."""
    tag = module_guest_name.split("-")[0]
    work = Path(f"/var/tmp/kiosk-lp-{module_guest_name}")
    bridge = f"{tag}lpbr"[:15]
    card_dir = Path(f"/dev/kt-snd-{tag}")
    ifname = f"{tag}esc"[:15]
    _ip("link", "add", bridge, "type", "bridge")
    names = {"confined": f"{module_guest_name}-c", "seed000": f"{module_guest_name}-s"}
    try:
        init = ESCAPES
        for key, value in {"card": card_dir / "pcmC9D0p", "unit": UNIT, "ifname": ifname}.items():
            init = init.replace("{" + key + "}", str(value))
        base = guestlib.make_rootfs(work / "base", init)
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
        yield {"work": work, "base": base, "bridge": bridge, "names": names, "card": card, "ifname": ifname}
    finally:
        subuid = ranges.read("/etc/subuid")["/etc/subuid"]
        starts = {e[1] for e in subuid if isinstance(e, tuple) and e[0] in names.values()}
        for name in names.values():
            ranges.ensure({"name": name, "state": "absent"})
        _ip("link", "del", bridge, check=False)
        shutil.rmtree(card_dir, ignore_errors=True)
        libvirtd.remove_domains(libvirt_daemon, module_guest_name)
        guestlib.release_systemd_cgroups(names.values(), starts)
        shutil.rmtree(work, ignore_errors=True)


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


@pytest.fixture(scope="module")
def guests(lab, libvirt_daemon):
    """Both guests provisioned twice by the role, then given the card the way sound_passthrough does
    (its plan's mutate, which restarts them); what their inits found after that restart."""
    first = _provision(lab)
    assert first[0].returncode == 0, first[0].stdout[-3000:] + first[0].stderr[-2000:]
    second = _provision(lab)
    confined, seed = lab["names"]["confined"], lab["names"]["seed000"]
    croot, sroot = lab["work"] / "guests" / confined, lab["work"] / "guests" / seed
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
        result = edit_definition(libvirt_daemon, name, soundplan.make_mutate(want), shutdown_timeout=2)
        assert result["restarted"], result
    return {
        "second": second,
        "croot": croot,
        "sroot": sroot,
        "cxml": libvirt_daemon.lookupByName(confined).XMLDesc(0),
        "sxml": libvirt_daemon.lookupByName(seed).XMLDesc(0),
        "c": _results(croot),
        "s": _results(sroot),
    }


def _range(name: str) -> tuple[int, int]:
    entries = {p: ranges.read(p)[p] for p in ("/etc/subuid", "/etc/subgid")}
    mine = [e for es in entries.values() for e in es if isinstance(e, tuple) and e[0] == name]
    assert len(mine) == 2 and mine[0] == mine[1], entries
    return mine[0][1], mine[0][2]


def test_a_second_role_run_changes_nothing(guests):
    """Range, clone, definition, cgroup, sound unit: all in place after the first run."""
    proc, records = guests["second"]
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert [r["task"] for r in records if r["status"] == "changed"] == []


def test_confined_guest_has_its_own_id_range_and_owns_its_clone(guests, lab):
    start, count = _range(lab["names"]["confined"])
    assert start >= 100000 and count == 65536
    croot = guests["croot"]
    assert croot.stat().st_uid == start and (croot / "bin" / "busybox").stat().st_gid == start
    assert (croot / "probe" / "othercard").stat().st_uid == start
    assert guests["c"]["uid_map"].split() == ["0", str(start), str(count)]
    # seed000: no idmap, host root owns its clone, the guest's ids are the host's.
    assert guests["sroot"].stat().st_uid == 0
    assert guests["s"]["uid_map"].split() == ["0", "0", "4294967295"]


def test_card_reaches_the_confined_guest_without_the_host_node_directory(guests, lab):
    """Under idmap the bind of the host's node directory is left out (its nodes would be nobody's)."""
    cxml, sxml = guests["cxml"], guests["sxml"]
    assert "<idmap>" in cxml and f"<target dir='{lab['card'].parent}'/>" not in cxml
    assert f"<char>{lab['card']}</char>" in cxml and "<privnet/>" in cxml and "<capabilities" not in cxml
    assert "<idmap>" not in sxml and "policy='allow'" in sxml and f"<target dir='{lab['card'].parent}'/>" in sxml


def test_the_roles_unit_gives_the_card_to_the_audio_group_only(guests):
    """The unit the role wrote, run in the guest as systemd would: before it the audio group is refused the
    node libvirt made (0700, the guest's root); after it a member opens it, a non-member still cannot."""
    c = guests["c"]
    assert guestlib.ERRNO_TEXT["ENXIO"] in c["card_root.log"], c["card_root.log"]
    assert guestlib.ERRNO_TEXT["EACCES"] in c["card_audio_before.log"], c["card_audio_before.log"]
    assert c.get("unit.rc") == "0", c.get("unit.log", f"no {UNIT} in the confined guest")
    assert guestlib.ERRNO_TEXT["ENXIO"] in c["card_audio.log"], c["card_audio.log"]
    assert guestlib.ERRNO_TEXT["EACCES"] in c["card_other.log"], c["card_other.log"]
    # Enabled the way systemctl enable would, owned by the guest's root.
    unit = guests["croot"] / UNIT.lstrip("/")
    link = unit.parent / "sysinit.target.wants" / unit.name
    assert os.readlink(link) == "../kiosk-sound-nodes.service"
    assert link.lstat().st_uid == unit.stat().st_uid == guests["croot"].stat().st_uid


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_confined_guest_fails_escape(guests, check):
    if check == "insmod" and not MODULES:
        pytest.skip("this kernel has no module support: insmod fails with ENOSYS in every guest")
    c = guests["c"]
    assert c[f"{check}.rc"] != "0", f"{check} succeeded in the confined guest: {c.get(check + '.log')}"
    reasons = CONFINED[check] if isinstance(CONFINED[check], tuple) else (CONFINED[check],)
    assert any(r in c[f"{check}.log"] for r in reasons), f"{check} failed for another reason: {c[check + '.log']}"


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_escape_check_gets_through_where_the_escape_is_open(guests, check):
    """The control of each check: it can fail, because it succeeds where nothing stops it."""
    where = CONTROL[check]
    if where == "seed000":
        if check == "insmod" and not MODULES:
            pytest.skip("this kernel has no module support: insmod fails with ENOSYS in every guest")
        s = guests["s"]
        if check == "insmod":  # the garbage is refused as a module, not for want of the capability
            assert CONFINED[check] not in s["insmod.log"], s["insmod.log"]
        else:
            assert s[f"{check}.rc"] == "0", f"{check} failed in the seed000 guest too: {s[check + '.log']}"
    elif where == "host":
        paths = CHECKS[check].split()[1:]
        if not Path(paths[0]).exists():
            pytest.skip(f"this machine has no {paths[0]}: the kiosk VM's verify.yml shows the check telling")
        proc = subprocess.run(CHECKS[check], shell=True, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
    else:  # the given card: the same open() passes the device cgroup (ENXIO: no driver behind the node)
        assert guestlib.ERRNO_TEXT["ENXIO"] in guests["c"]["card_root.log"], guests["c"]["card_root.log"]


def test_confined_guest_keeps_no_host_capability(guests):
    """libvirt's default policy (what profile confined asks for) drops these from the bounding set; all the
    guest keeps are capabilities of its own user namespace. seed000 keeps them: the check tells."""
    assert not _caps(guests["c"]["capbnd"]), guests["c"]["capbnd"]
    assert {"sys_module", "sys_time", "mknod"} <= _caps(guests["s"]["capbnd"]), guests["s"]["capbnd"]


def test_confined_guest_sees_only_its_own_processes(guests):
    """Its init and the shell running the checks; this machine's /proc, read the same way, has libvirtd."""
    procs = guests["c"]["procs"].split()
    assert "libvirtd" not in procs and len(procs) <= 5, procs
    host = {Path(p, "comm").read_text().strip() for p in Path("/proc").glob("[0-9]*") if Path(p, "comm").exists()}
    assert "libvirtd" in host


def test_a_link_made_in_the_confined_guest_stays_there(guests, lab):
    """The guest makes a bridge (it may, in its own network namespace): the guest sees it, the host does not;
    the host's bridges are not visible in the guest."""
    c = guests["c"]
    assert c["netlink.rc"] == "0", c["netlink.log"]
    assert lab["ifname"] in c["links"], c["links"]
    assert _ip("link", "show", lab["ifname"], check=False).returncode != 0
    assert _ip("link", "show", lab["bridge"]).returncode == 0
    assert lab["bridge"] not in c["links"] and "lxcbr0" not in c["links"]


def test_confined_guest_has_a_name_systemd_cgroup_of_its_own(guests, lab):
    """No systemd here: the guest's name=systemd cgroup is its own, not the host's shared root."""
    if not (Path("/sys/fs/cgroup/systemd/cgroup.procs").exists() and not Path("/run/systemd/system").exists()):
        pytest.skip("only a host without systemd with a name=systemd hierarchy shares its root with guests")
    confined = lab["names"]["confined"]
    assert f" /kiosk-lxc/{confined} /sys/fs/cgroup/systemd " in guests["c"]["systemd_cgroup"]


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
