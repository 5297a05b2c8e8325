"""Guest clones share their base's blocks where the filesystem has reflinks.

kiosk.lxc.rootfs method clone runs `cp -a --reflink=auto`. Each test makes a
real filesystem in a sparse file, loop-mounts it, builds a base rootfs (a
busybox tree plus a 32 MiB payload of random bytes) into a cache there and
clones it N times through Ansible, then compares the filesystem's used space:
on XFS with reflink=1 the clones cost next to nothing; on ext4 (the control,
and what a kiosk's root usually is) each clone is a full copy. Nothing is
mocked. Needs root, loop devices, mkfs.xfs (xfsprogs) and mkfs.ext4.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from guest import make_rootfs
from play import run_module, run_playbook

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CLONES = 4
PAYLOAD = 32 << 20
MKFS = {
    "xfs": ["mkfs.xfs", "-q", "-m", "reflink=1"],
    "ext4": ["mkfs.ext4", "-q"],
}


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"CI=true and a part of this test is missing: {reason}", pytrace=False)
    pytest.skip(f"copy-on-write clone test skipped: {reason}")


@contextlib.contextmanager
def loop_fs(tmp_path: Path, fstype: str):
    """A fresh fstype filesystem of 512 MiB (a sparse file), loop-mounted; unmounted afterwards."""
    if os.geteuid() != 0:
        _unavailable("mounting a loop filesystem needs root")
    if not shutil.which(MKFS[fstype][0]):
        _unavailable(f"{MKFS[fstype][0]} is not installed (bindep.txt, profile test)")
    image = tmp_path / f"{fstype}.img"
    mnt = tmp_path / f"{fstype}.mnt"
    mnt.mkdir()
    with open(image, "wb") as fh:
        fh.truncate(512 << 20)
    subprocess.run([*MKFS[fstype], str(image)], check=True)
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        _unavailable(f"cannot loop-mount a {fstype} image: {mounted.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def used(mnt: Path) -> int:
    """Bytes in use on the filesystem, after writing everything back."""
    os.sync()
    st = os.statvfs(mnt)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


@pytest.fixture
def base_tarball(tmp_path):
    """An uncompressed rootfs tarball: a busybox tree and PAYLOAD random bytes (nothing to deduplicate)."""
    tree = make_rootfs(tmp_path / "tree")
    payload = tree / "usr" / "share" / "kiosk" / "payload.bin"
    payload.parent.mkdir(parents=True)
    with open(payload, "wb") as fh:
        for _block in range(PAYLOAD >> 20):
            fh.write(os.urandom(1 << 20))
    tar_path = tmp_path / "rootfs.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(tree, arcname=".")
    return tar_path, hashlib.sha256(tar_path.read_bytes()).hexdigest()


def base_and_clones(tmp_path: Path, mnt: Path, tarball: Path, sha: str) -> tuple[int, int, list[dict]]:
    """(bytes the base took, bytes all clones took, the clones' results)."""
    start = used(mnt)
    base = run_module(
        "kiosk.lxc.rootfs",
        {"method": "image", "src": str(tarball), "sha256": sha, "cache_dir": str(mnt / "rootfs"), "networkd": False},
    )
    assert base["_status"] == "changed", base.get("msg", base["_stdout"])
    assert base["cow"] is None, "cow is a clone's property"
    after_base = used(mnt)
    # One playbook for all clones (an ansible-playbook run costs seconds): check mode first, then the
    # clones, then the last one again.
    clone = {"method": "clone", "src": base["path"], "name": "player{{ item }}", "cache_dir": str(mnt / "guests")}
    last = CLONES - 1
    tasks = [
        {"kiosk.lxc.rootfs": clone, "loop": [0], "check_mode": True},
        {"kiosk.lxc.rootfs": clone, "loop": list(range(CLONES))},
        {"kiosk.lxc.rootfs": clone, "loop": [last]},
    ]
    playbook = tmp_path / "clones.yml"
    playbook.write_text(json.dumps([{"hosts": "all", "gather_facts": False, "tasks": tasks}]))
    proc, records = run_playbook(playbook)
    assert proc.returncode == 0, proc.stdout[-3000:]
    check, made, again = (r["result"]["results"] for r in records)
    assert check[0]["changed"] is True
    assert check[0]["cow"] is None, "not known before the clone is made"
    assert [r["changed"] for r in made] == [True] * CLONES
    for res in made:
        assert (Path(res["path"]) / "usr" / "share" / "kiosk" / "payload.bin").stat().st_size == PAYLOAD
    assert again[0]["changed"] is False
    assert again[0]["cow"] == made[last]["cow"], "the clone's record answers on later runs too"
    return after_base - start, used(mnt) - after_base, made


def test_clones_on_xfs_share_the_base_blocks(tmp_path, base_tarball):
    with loop_fs(tmp_path, "xfs") as mnt:
        base_bytes, clone_bytes, clones = base_and_clones(tmp_path, mnt, *base_tarball)
    print(f"xfs reflink: base {base_bytes >> 10} KiB, {CLONES} clones {clone_bytes >> 10} KiB")
    assert base_bytes >= PAYLOAD
    assert [c["cow"] for c in clones] == [True] * CLONES
    # Only metadata (inodes, directories, the new /etc/hostname) is new: far below one base.
    assert clone_bytes < base_bytes / 4, f"{CLONES} clones took {clone_bytes} bytes, the base {base_bytes}"


def test_clones_on_ext4_are_full_copies_and_say_so(tmp_path, base_tarball):
    with loop_fs(tmp_path, "ext4") as mnt:
        base_bytes, clone_bytes, clones = base_and_clones(tmp_path, mnt, *base_tarball)
    print(f"ext4: base {base_bytes >> 10} KiB, {CLONES} clones {clone_bytes >> 10} KiB")
    assert [c["cow"] for c in clones] == [False] * CLONES
    assert clone_bytes >= 0.9 * CLONES * base_bytes, f"{CLONES} clones took {clone_bytes} bytes, the base {base_bytes}"
