"""Rootfs directories keep their bases' setuid binaries out of reach of the host's users.

A base or a guest's rootfs holds setuid-root programs (su, passwd, mount ...) built for the guest.
Reachable from the host, any host user can run them as host root with a rootfs of the guest's
making around them. The test builds a rootfs (image method, a tarball with a setuid program) in
a world-traversable scratch directory and tries to reach the program as nobody (setpriv).
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import shutil
import subprocess
import tarfile
import threading

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.rootfs import build

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv (util-linux)"
)


@pytest.fixture
def scratch():
    path = f"/var/tmp/kiosk-modes-{secrets.token_hex(3)}"
    os.mkdir(path, 0o755)
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def _image(path):
    with tarfile.open(path, "w:xz") as tar:
        for name in ("./", "./usr", "./usr/bin"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("./usr/bin/su")
        data = b"#!/bin/sh\nid\n"
        info.size, info.mode = len(data), 0o4755
        tar.addfile(info, io.BytesIO(data))
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _as_nobody(*argv):
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("existing", [False, True])
def test_a_host_user_cannot_reach_a_setuid_program_in_a_rootfs(scratch, existing):
    cache = os.path.join(scratch, "rootfs")
    if existing:  # a cache directory made before, world-readable
        os.mkdir(cache, 0o755)
        os.chmod(cache, 0o755)
    tarball = os.path.join(scratch, "image.tar.xz")
    d = build.desired({"method": "image", "src": tarball, "sha256": _image(tarball), "networkd": False, "name": "b"})
    path = build.apply(cache, d, run=None)["path"]
    su = os.path.join(path, "usr", "bin", "su")
    assert os.stat(su).st_mode & 0o4000  # the rootfs keeps its setuid program ...
    probe = _as_nobody("test", "-x", su)
    assert probe.returncode != 0, f"nobody can run {su}"  # ... out of a host user's reach
    assert _as_nobody("ls", cache).returncode != 0
    assert os.stat(cache).st_mode & 0o777 == 0o700
    assert os.stat(path).st_mode & 0o777 == 0o755  # the guest's / itself stays as the image has it


def _run(argv):
    if subprocess.run(argv, capture_output=True, check=False).returncode:
        raise KioskError(f"{argv[0]} failed")


def test_an_idmapped_guests_root_alone_passes_through_to_its_rootfs(scratch):
    """An idmapped guest's root is host uid 231072 here: libvirt reaches its rootfs as that uid."""
    bases, guests = os.path.join(scratch, "rootfs"), os.path.join(scratch, "guests")
    tarball = os.path.join(scratch, "image.tar.xz")
    d = build.desired({"method": "image", "src": tarball, "sha256": _image(tarball), "networkd": False, "name": "b"})
    base = build.apply(bases, d, run=None)["path"]
    clone = build.desired(
        {"method": "clone", "src": base, "name": "g1", "idmap": {"uid": 231072, "gid": 231072, "count": 65536}}
    )
    path = build.apply(guests, clone, run=_run)["path"]
    su = os.path.join(path, "usr", "bin", "su")
    reach = subprocess.run(["setpriv", "--reuid=231072", "--regid=231072", "--clear-groups", "test", "-x", su],
                           check=False)  # fmt: skip
    assert reach.returncode == 0, "the guest's own root cannot reach its rootfs"
    assert _as_nobody("test", "-x", su).returncode != 0
    assert _as_nobody("ls", guests).returncode != 0


def test_guests_cloned_side_by_side_each_keep_their_search_permission(tmp_path):
    """The guest module clones guests in parallel: each grant reads the ACL, adds its uid, writes it back.

    Seen failing before the grant was serialised: a guest's entry lost to another's write, and its
    libvirt_lxc then could not create .oldroot in its own rootfs ("Permission denied").
    """
    cache = tmp_path / "guests"
    cache.mkdir(mode=0o700)
    uids = [100000 + 65536 * i for i in range(24)]
    start = threading.Barrier(len(uids))

    def grant(uid):
        start.wait()
        build.grant_search(str(cache), uid)

    threads = [threading.Thread(target=grant, args=(u,)) for u in uids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert build._acl_users(str(cache)) == dict.fromkeys(uids, 1)
