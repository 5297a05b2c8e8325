"""Which guest process the agent takes for a sound server: strictly, and never more than a few.

Any process of a guest may call itself pulseaudio. A fake /proc tree (the
shapes the kernel writes: comm, ns/pid, cgroup with a v1 devices line and a
v2 line, environ, uid_map) stands in for the host's, since the test cannot
start processes in another pid namespace or cgroup without root; the
integration test test_hotplug_hostile_guest.py mounts the same attacks for
real.
"""

from __future__ import annotations

import os

from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug import guests

GUEST = "/machine/lxc-7-player.libvirt-lxc"
INIT = 100


def _proc(tmp_path, pid: int, comm: str, cgroup: str = GUEST, pidns: str = "pid:[4026532001]"):
    d = tmp_path / str(pid)
    (d / "ns").mkdir(parents=True)
    (d / "ns" / "pid").symlink_to(pidns)
    (d / "comm").write_text(comm + "\n")
    (d / "cgroup").write_text(f"5:devices:{cgroup}\n0::{cgroup}\n")
    (d / "environ").write_bytes(b"XDG_RUNTIME_DIR=/run/user/1000\0HOME=/home/kiosk\nforged\0PATH=/bin\0")
    return d


def _guest(tmp_path, uid_map: str = "0 100000 65536\n"):
    init = _proc(tmp_path, INIT, "init")
    (init / "root" / "etc").mkdir(parents=True)
    (init / "root" / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\nkiosk:x:1000:1000::/home/kiosk:/bin/sh\n")
    (init / "uid_map").write_text(uid_map)
    return str(tmp_path)


def test_the_kiosk_users_uid_is_read_in_the_guest_and_mapped_out(tmp_path):
    proc = _guest(tmp_path)
    assert guests.kiosk_uid(INIT, "kiosk", proc) == 101000
    assert guests.kiosk_uid(INIT, "nobody", proc) is None


def test_a_planted_passwd_link_is_not_followed(tmp_path):
    proc = _guest(tmp_path)
    passwd = tmp_path / str(INIT) / "root" / "etc" / "passwd"
    passwd.unlink()
    passwd.symlink_to("/etc/passwd")  # the host's: root would be found there
    assert guests.kiosk_uid(INIT, "root", proc) is None


def test_only_the_kiosk_users_servers_in_the_guests_cgroup_and_pid_namespace_count(tmp_path):
    proc = _guest(tmp_path, uid_map=f"1000 {os.getuid()} 1\n")
    _proc(tmp_path, 200, "pulseaudio")
    _proc(tmp_path, 201, "pulseaudio", cgroup="/machine/lxc-9-other.libvirt-lxc")  # another guest's cgroup
    _proc(tmp_path, 202, "pulseaudio", cgroup="/machine/lxc-7-player.libvirt-lxc-x")  # a prefix, not below
    _proc(tmp_path, 203, "pulseaudio", pidns="pid:[4026531836]")  # the host's pid namespace
    _proc(tmp_path, 204, "pipewire", cgroup=GUEST + "/user.slice")
    uid = guests.kiosk_uid(INIT, "kiosk", proc)
    found = guests.sound_servers(INIT, uid, GUEST, proc)
    assert [(s["kind"], s["pid"]) for s in found["servers"]] == [("pulseaudio", 200), ("pipewire", 204)]
    # an environment value with a newline in it is not taken
    assert found["servers"][0]["env"] == {"XDG_RUNTIME_DIR": "/run/user/1000"}
    assert guests.sound_servers(INIT, uid + 1, GUEST, proc)["servers"] == []  # owned by someone else
    assert guests.sound_servers(INIT, None, GUEST, proc)["servers"] == []  # no kiosk user in the guest


def test_two_hundred_fake_servers_are_not_all_looked_at(tmp_path):
    proc = _guest(tmp_path, uid_map=f"0 {os.getuid() + 1} 1\n")  # the kiosk uid owns none of them
    for pid in range(200, 400):
        _proc(tmp_path, pid, "pulseaudio")
    found = guests.sound_servers(INIT, 12345, GUEST, proc)
    assert found["servers"] == []
    assert found["looked"] == guests.MAX_CANDIDATES and found["passed"] == 200 - guests.MAX_CANDIDATES
