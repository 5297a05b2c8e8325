"""kiosk.lxc.rootfs through Ansible: cached by definition, atomic, serialised.

The image method with a tarball the test makes is the fast real path; the
debootstrap path (minutes, a Debian mirror) is exercised by `make demo` and the
kiosk VM scenarios.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
from play import REPO, ansible_env, run_module

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds root filesystems: needs root")


@pytest.fixture
def image(tmp_path):
    """An LXC image-server style rootfs.tar.xz (rootfs/ inside) of a tiny tree."""
    tree = tmp_path / "tree" / "rootfs"
    for d in ("etc", "bin", "dev"):
        (tree / d).mkdir(parents=True)
    (tree / "etc" / "os-release").write_text("ID=kiosktest\n")
    os.mknod(tree / "dev" / "null", 0o666 | 0o020000, os.makedev(1, 3))
    tar_path = tmp_path / "rootfs.tar.xz"
    with tarfile.open(tar_path, "w:xz") as tar:
        tar.add(tree, arcname="rootfs")
    sha = hashlib.sha256(tar_path.read_bytes()).hexdigest()
    return tar_path, sha


def args(cache, src, sha, **extra):
    return {"method": "image", "src": str(src), "sha256": sha, "cache_dir": str(cache), "networkd": True} | extra


def test_check_real_check_then_nothing_to_do(tmp_path, image):
    src, sha = image
    cache = tmp_path / "cache"
    a = args(cache, src, sha)
    first = run_module("kiosk.lxc.rootfs", a, check=True, diff=True)
    assert first["_status"] == "changed", first["_stdout"]
    assert not cache.exists() or not any(cache.iterdir()) or not Path(first["path"]).exists()
    real = run_module("kiosk.lxc.rootfs", a)
    assert real["_status"] == "changed"
    root = Path(real["path"])
    assert real["path"] == first["path"]
    assert (root / "etc" / "os-release").read_text() == "ID=kiosktest\n"
    assert (root / "dev" / "null").is_char_device()
    assert (root / "etc" / "systemd" / "network" / "80-kiosk-eth0.network").exists()
    assert json.loads((root.parent / f".kiosk-rootfs-{root.name}.json").read_text())["key"] == real["key"]
    assert run_module("kiosk.lxc.rootfs", a, check=True)["_status"] == "ok"
    assert run_module("kiosk.lxc.rootfs", a)["_status"] == "ok"


def test_a_changed_definition_is_another_rootfs(tmp_path, image):
    src, sha = image
    cache = tmp_path / "cache"
    one = run_module("kiosk.lxc.rootfs", args(cache, src, sha))
    two = run_module("kiosk.lxc.rootfs", args(cache, src, sha, networkd=False))
    assert two["_status"] == "changed"
    assert one["path"] != two["path"]
    assert Path(one["path"]).exists()
    assert not (Path(two["path"]) / "etc" / "systemd" / "network" / "80-kiosk-eth0.network").exists()


def test_wrong_checksum_leaves_nothing_behind(tmp_path, image):
    src, _sha = image
    cache = tmp_path / "cache"
    bad = "0" * 64
    res = run_module("kiosk.lxc.rootfs", args(cache, src, bad))
    assert res["_status"] == "failed"
    assert res["msg"].startswith(f"src: {src} has sha256 ")
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".lock-")) == []


def test_interrupted_build_is_redone(tmp_path, image):
    """What `kill -9` of a build leaves: a hidden .build-<name>-<pid> directory
    and no manifest. Made here directly, so the test does not race a real kill."""
    src, sha = image
    cache = tmp_path / "cache"
    a = args(cache, src, sha, name="base")
    leftover = cache / ".build-base-424242"
    (leftover / "etc").mkdir(parents=True)
    (leftover / "etc" / "half").write_text("half-built")
    check = run_module("kiosk.lxc.rootfs", a, check=True)
    assert any("interrupted build" in act for act in check["actions"])
    assert leftover.exists(), "check mode must not touch anything"
    res = run_module("kiosk.lxc.rootfs", a)
    assert res["_status"] == "changed"
    assert not leftover.exists()
    assert (cache / "base" / "etc" / "os-release").exists()
    assert run_module("kiosk.lxc.rootfs", a)["_status"] == "ok"


def test_two_runs_at_once_build_once(tmp_path, image):
    """Two ansible-playbook processes on one host, both started while this test
    holds the rootfs's lock: neither may build while the lock is held; once it
    is released, one builds and the other finds the finished rootfs."""
    src, sha = image
    cache = tmp_path / "cache"
    cache.mkdir()
    task = {"kiosk.lxc.rootfs": args(cache, src, sha, name="base")}
    play = [{"hosts": "all", "gather_facts": False, "tasks": [task]}]
    pb = tmp_path / "play.yml"
    pb.write_text(json.dumps(play))
    procs = []
    with open(cache / ".lock-base", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for _attempt in range(2):
            rec = tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False)  # noqa: SIM115
            rec.close()
            cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                   "-e", f"ansible_python_interpreter={sys.executable}", str(pb)]  # fmt: skip
            proc = subprocess.Popen(cmd, env=ansible_env(rec.name), cwd=REPO, stdout=subprocess.PIPE)
            procs.append((proc, rec.name))
        time.sleep(8)  # ample time for both to reach the lock
        assert [p.poll() for p, _rec in procs] == [None, None], "a run finished while the lock was held"
        assert not (cache / "base").exists()
        fcntl.flock(lock, fcntl.LOCK_UN)
    statuses = []
    for proc, rec in procs:
        proc.communicate(timeout=120)
        assert proc.returncode == 0
        statuses.append(json.loads(Path(rec).read_text().splitlines()[-1])["status"])
        os.unlink(rec)
    assert sorted(statuses) == ["changed", "ok"]
    assert (cache / "base" / "etc" / "os-release").exists()


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"sha256": "abc"}, "sha256: the image method needs the image's sha256"),
        ({"src": "/nonexistent/rootfs.tar.xz"}, "src: /nonexistent/rootfs.tar.xz does not exist"),
        ({"packages": ["mpv"]}, "packages: the image method installs no packages"),
        ({"arch": "sparc"}, "arch: 'sparc' is not one of"),
        ({"name": "../escape"}, "name: '../escape' may hold only"),
        ({"user": "Kiosk User"}, "user: 'Kiosk User' is not a valid user name"),
    ],
)
def test_bad_input_fails_before_anything_is_touched(tmp_path, image, extra, fragment):
    src, sha = image
    cache = tmp_path / "cache"
    res = run_module("kiosk.lxc.rootfs", args(cache, src, sha) | extra)
    assert res["_status"] == "failed"
    assert fragment in res["msg"]
    assert not cache.exists()


def test_a_guest_clone_has_its_own_hostname_and_keeps_its_state(tmp_path, image):
    src, sha = image
    base = run_module("kiosk.lxc.rootfs", args(tmp_path / "cache", src, sha))
    clone_args = {"method": "clone", "src": base["path"], "name": "player1", "cache_dir": str(tmp_path / "guests")}
    assert run_module("kiosk.lxc.rootfs", clone_args, check=True)["_status"] == "changed"
    clone = run_module("kiosk.lxc.rootfs", clone_args)
    assert clone["_status"] == "changed"
    root = Path(clone["path"])
    assert (root / "etc" / "hostname").read_text() == "player1\n"
    assert (root / "etc" / "os-release").read_text() == "ID=kiosktest\n"
    assert not (Path(base["path"]) / "etc" / "hostname").exists(), "the base must stay pristine"
    (root / "etc" / "guest-state").write_text("kept")
    assert run_module("kiosk.lxc.rootfs", clone_args)["_status"] == "ok"
    # The base is rebuilt from another definition: the guest keeps its rootfs and is told.
    rebuilt = run_module("kiosk.lxc.rootfs", args(tmp_path / "cache", src, sha, networkd=False))
    again = run_module("kiosk.lxc.rootfs", clone_args | {"src": rebuilt["path"]})
    assert again["_status"] == "ok"
    assert again["outdated"] is True
    assert (root / "etc" / "guest-state").read_text() == "kept"


def test_pack_ships_a_checked_tarball_that_unpacks_the_same(tmp_path, image):
    """The controller build of the rootfs role: pack on one side, unpack checked on the other."""
    src, sha = image
    a = args(tmp_path / "controller", src, sha, pack=True)
    assert run_module("kiosk.lxc.rootfs", a, check=True)["_status"] == "changed"
    packed = run_module("kiosk.lxc.rootfs", a)
    assert packed["_status"] == "changed"
    tarball = Path(packed["tarball"])
    assert packed["tarball_sha256"] == hashlib.sha256(tarball.read_bytes()).hexdigest()
    again = run_module("kiosk.lxc.rootfs", a)
    assert again["_status"] == "ok"
    assert again["tarball_sha256"] == packed["tarball_sha256"]
    shipped = run_module(
        "kiosk.lxc.rootfs",
        {"method": "image", "name": "shipped", "src": str(tarball), "sha256": packed["tarball_sha256"],
         "cache_dir": str(tmp_path / "kiosk"), "networkd": False},
    )  # fmt: skip
    assert shipped["_status"] == "changed"
    root = Path(shipped["path"])
    assert (root / "etc" / "os-release").read_text() == "ID=kiosktest\n"
    assert (root / "etc" / "systemd" / "network" / "80-kiosk-eth0.network").exists()
    assert (root / "dev" / "null").is_char_device()
