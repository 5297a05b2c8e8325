"""The hotplug agent's device nodes in a guest whose root planted links in its /dev (issue 18, item 1).

The guest is a real process chrooted into a busybox rootfs: the agent's code
reaches it through /proc/<pid>/root exactly as it reaches a libvirt guest's
init (what libvirt adds, the device cgroup and namespaces, plays no part in
how a path under /proc/<pid>/root resolves). The guest's root then does what
a compromised one would: `/dev/snd` made a link to a host directory. The
host directories are tmp directories standing for /usr/bin and for the
host's own /dev/snd, never the machine's real ones. No libvirtd, bridge or
namespace is involved, so this runs with the unit tests (as root).
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from pathlib import Path

import guest as guestlib
import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug import apply

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mknod and chroot need root")

CARD1 = {"controlC1": 10, "pcmC1D0p": 9}
TOOL = "#!/bin/sh\necho host tool\n"


@pytest.fixture
def host(tmp_path):
    """The host's side: card 1's nodes in the host's (stand-in) /dev/snd."""
    dev = tmp_path / "host-dev"
    for name, minor in CARD1.items():
        guestlib.mknod_char(dev / "snd" / name, 116, minor, 0o660)
    os.chown(dev / "snd" / "controlC1", 0, 29)
    return dev


@pytest.fixture
def chrooted(tmp_path):
    """A process chrooted into a busybox rootfs: the stand-in guest; yields (its pid, its root)."""
    root = guestlib.make_rootfs(tmp_path / "rootfs")
    proc = subprocess.Popen(["chroot", str(root), "/bin/sleep", "600"])
    try:
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{proc.pid}/root") != str(root):
            assert time.monotonic() < deadline, "the chroot did not happen"
            time.sleep(0.01)
        yield proc.pid, root
    finally:
        proc.kill()
        proc.wait()


def _nodes(dev: Path) -> list[dict]:
    return [
        {"name": name, "major": 116, "minor": minor, "path": str(dev / "snd" / name)} for name, minor in CARD1.items()
    ]


def _host_bin(tmp_path) -> Path:
    """A directory standing for the host's /usr/bin, with a program named like a card node."""
    usrbin = tmp_path / "host-usr-bin"
    usrbin.mkdir()
    (usrbin / "controlC1").write_text(TOOL)
    (usrbin / "controlC1").chmod(0o755)
    return usrbin


def _refusal(work) -> str:
    """What work() raised (KioskError), or '' when it went through; the host is checked before the message."""
    try:
        work()
    except KioskError as exc:
        return exc.msg
    return ""


def test_nodes_are_made_and_removed_in_a_plain_guest(host, chrooted):
    pid, root = chrooted
    made = apply.make_nodes(pid, _nodes(host), str(host))
    assert made == ["mknod /dev/snd/controlC1 in the guest", "mknod /dev/snd/pcmC1D0p in the guest"]
    st = os.lstat(root / "dev" / "snd" / "controlC1")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(116, 10)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o660, 0, 29)
    assert apply.make_nodes(pid, _nodes(host), str(host)) == []
    assert len(apply.remove_nodes(pid, _nodes(host), str(host))) == 2
    assert os.listdir(root / "dev" / "snd") == []


def test_a_dev_snd_linked_to_a_host_directory_gets_no_nodes(host, chrooted, tmp_path):
    """Guest root: `mv /dev/snd /dev/snd.x; ln -s /usr/bin /dev/snd`, then a card is attached."""
    pid, root = chrooted
    usrbin = _host_bin(tmp_path)
    (root / "dev" / "snd").symlink_to(usrbin)
    msg = _refusal(lambda: apply.make_nodes(pid, _nodes(host), str(host)))
    assert sorted(os.listdir(usrbin)) == ["controlC1"]
    st = os.lstat(usrbin / "controlC1")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
    assert (usrbin / "controlC1").read_text() == TOOL
    assert re.fullmatch(r"/dev/snd in the guest: .*symbolic link.*; refused", msg), msg


def test_a_dev_snd_linked_to_the_hosts_nodes_does_not_lose_them_on_detach(host, chrooted, tmp_path):
    """Guest root links /dev/snd to a host directory holding card nodes: the detach must not unlink those."""
    pid, root = chrooted
    victim = tmp_path / "host-nodes"
    guestlib.mknod_char(victim / "controlC1", 116, 10, 0o660)
    (root / "dev" / "snd").symlink_to(victim)
    msg = _refusal(lambda: apply.remove_nodes(pid, _nodes(host), str(host)))
    assert os.listdir(victim) == ["controlC1"] and stat.S_ISCHR(os.lstat(victim / "controlC1").st_mode)
    assert re.fullmatch(r"/dev/snd in the guest: .*symbolic link.*; refused", msg), msg


def test_a_dev_snd_the_guest_owns_is_refused(host, chrooted):
    """An idmapped guest's root (host uid 100000 here) replaced /dev/snd by a directory of its own."""
    pid, root = chrooted
    (root / "dev" / "snd").mkdir()
    os.chown(root / "dev" / "snd", 100000, 100000)
    msg = _refusal(lambda: apply.make_nodes(pid, _nodes(host), str(host)))
    assert os.listdir(root / "dev" / "snd") == []
    assert msg == "/dev/snd in the guest: owned by uid 100000, not root; refused"


def test_a_dev_that_is_a_link_is_not_followed_either(host, chrooted, tmp_path):
    pid, root = chrooted
    usrbin = _host_bin(tmp_path)
    (usrbin / "snd").mkdir()
    (root / "dev").rmdir()
    (root / "dev").symlink_to(usrbin)
    msg = _refusal(lambda: apply.make_nodes(pid, _nodes(host), str(host)))
    assert sorted(os.listdir(usrbin)) == ["controlC1", "snd"] and os.listdir(usrbin / "snd") == []
    assert "symbolic link" in msg
