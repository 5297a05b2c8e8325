"""The image method's extraction against crafted tarballs (real tar files, real extraction, as root).

A sha256 pin says the tarball is the one the user named, not that it is safe: each tarball here
tries to write or move something outside the build directory, into a directory of the test's
own ("outside", beside the cache directory), which must be left exactly as it was.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.rootfs import build

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="extracting owners and device nodes needs root")


def _tar(path, members):
    """members: (TarInfo fields dict, data bytes or None)."""
    with tarfile.open(path, "w:xz") as tar:
        for given, data in members:
            fields = dict(given)  # a member may be used by several tarballs
            info = tarfile.TarInfo(fields.pop("name"))
            for key, value in fields.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return str(path)


def _dir(name, mode=0o755):
    return {"name": name, "type": tarfile.DIRTYPE, "mode": mode}, None


def _file(name, data=b"x\n", **fields):
    return {"name": name, "mode": 0o644, **fields}, data


def _link(name, target):
    return {"name": name, "type": tarfile.SYMTYPE, "linkname": target}, None


def _build(tmp_path, tarball, networkd=False):
    with open(tarball, "rb") as fh:
        sha = hashlib.sha256(fh.read()).hexdigest()
    d = build.desired({"method": "image", "src": tarball, "sha256": sha, "networkd": networkd, "name": "img"})
    return build.apply(str(tmp_path / "cache"), d, run=None)


def _read(root, rel):
    with open(os.path.join(root, rel), encoding="utf-8") as fh:
        return fh.read()


def _tree(path):
    return sorted((p, os.lstat(os.path.join(r, p)).st_mode) for r, ds, fs in os.walk(path) for p in ds + fs)


@pytest.fixture
def outside(tmp_path):
    out = tmp_path / "outside"
    out.mkdir()
    (out / "precious").write_text("the host's own file\n")
    return out


def _attacks(outside):
    yield "absolute member", [_dir("etc"), _file(f"{outside}/planted")]
    yield "dot-dot member", [_dir("etc"), _file("../../outside/planted")]
    yield "write through a link", [_link("etc", str(outside)), _file("etc/planted")]
    yield "replace through a link", [_link("etc", str(outside)), _file("etc/precious", b"overwritten\n")]
    yield "hard link through a link", [_link("l", str(outside)),
                                       ({"name": "etc", "type": tarfile.LNKTYPE, "linkname": "l/precious"}, None),
                                       _file("etc", b"overwritten\n")]  # fmt: skip
    yield "rootfs link to outside", [_file("metadata.yaml"), _link("rootfs", str(outside))]


@pytest.mark.parametrize("attack", range(6))
def test_a_crafted_tarball_never_touches_outside_the_build(tmp_path, outside, attack):
    what, members = list(_attacks(outside))[attack]
    before = _tree(outside)
    tarball = _tar(tmp_path / "image.tar.xz", members)
    try:
        _build(tmp_path, tarball)
        err = None
    except Exception as exc:
        err = exc
    assert _tree(outside) == before, what
    assert (outside / "precious").read_text() == "the host's own file\n", what
    assert isinstance(err, KioskError), f"{what}: {err!r}"
    assert err.msg.startswith("src: "), err.msg
    assert "\n" not in err.msg
    assert os.listdir(tmp_path / "cache") == [".lock-img"], what  # no half build left


def test_a_file_over_a_planted_link_replaces_the_link(tmp_path, outside):
    tarball = _tar(
        tmp_path / "image.tar.xz",
        [_dir("etc"), _link("etc/shadow", f"{outside}/precious"), _file("etc/shadow", b"the image's\n")],
    )
    root = _build(tmp_path, tarball)["path"]
    assert (outside / "precious").read_text() == "the host's own file\n"
    assert not os.path.islink(os.path.join(root, "etc/shadow"))
    assert _read(root, "etc/shadow") == "the image's\n"


def test_a_link_where_the_build_configures_is_refused(tmp_path, outside):
    tarball = _tar(tmp_path / "image.tar.xz", [_dir("etc"), _link("etc/systemd", str(outside))])
    with pytest.raises(KioskError, match=r"symbolic link"):  # configure() writes through guestfs
        _build(tmp_path, tarball, networkd=True)
    assert os.listdir(outside) == ["precious"]


def test_an_image_that_has_the_files_the_build_writes_is_configured(tmp_path, outside):
    """A packed kiosk.lxc rootfs (the rootfs role's controller build) holds them already."""
    net = "etc/systemd/network/80-kiosk-eth0.network"
    dirs = [_dir("etc"), _dir("etc/systemd"), _dir("etc/systemd/network")]
    tarball = _tar(tmp_path / "image.tar.xz", [*dirs, _file(net, b"old\n")])
    root = _build(tmp_path, tarball, networkd=True)["path"]
    assert "DHCP=yes" in _read(root, net)
    planted = _tar(tmp_path / "planted.tar.xz", [*dirs, _link(net, f"{outside}/precious")])
    root = _build(tmp_path, planted, networkd=True)["path"]  # the link is replaced, never written through
    assert (outside / "precious").read_text() == "the host's own file\n"
    assert not os.path.islink(os.path.join(root, net))


def test_a_rootfs_image_keeps_devices_owners_modes_and_links(tmp_path):
    tarball = _tar(
        tmp_path / "image.tar.xz",
        [
            _dir("./"),
            _dir("./etc"),
            _file("./etc/hostname", b"img\n"),
            _dir("./usr/bin"),
            _file("./usr/bin/su", b"#!/bin/sh\n", mode=0o4755),
            _file("./home", None, type=tarfile.DIRTYPE, mode=0o750, uid=1000, gid=1000),
            _link("./bin", "usr/bin"),
            _link("./etc/mtab", "/proc/self/mounts"),
            ({"name": "./usr/bin/su2", "type": tarfile.LNKTYPE, "linkname": "./usr/bin/su", "mode": 0o4755}, None),
            _dir("./dev"),
            ({"name": "./dev/null", "type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3, "mode": 0o666}, None),
        ],
    )
    result = _build(tmp_path, tarball)
    root = result["path"]
    assert _read(root, "etc/hostname") == "img\n"
    st = os.lstat(os.path.join(root, "dev/null"))
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert os.lstat(os.path.join(root, "usr/bin/su")).st_mode & 0o7777 == 0o4755
    home = os.lstat(os.path.join(root, "home"))
    assert (home.st_uid, home.st_gid, home.st_mode & 0o777) == (1000, 1000, 0o750)
    assert os.readlink(os.path.join(root, "etc/mtab")) == "/proc/self/mounts"
    assert os.readlink(os.path.join(root, "bin")) == "usr/bin"
    assert os.path.samefile(os.path.join(root, "usr/bin/su"), os.path.join(root, "usr/bin/su2"))


def test_an_lxc_image_with_rootfs_beside_metadata_is_moved_up(tmp_path):
    tarball = _tar(
        tmp_path / "image.tar.xz",
        [_file("metadata.yaml"), _dir("rootfs"), _dir("rootfs/etc"), _file("rootfs/etc/hostname", b"lxc\n")],
    )
    root = _build(tmp_path, tarball)["path"]
    assert _read(root, "etc/hostname") == "lxc\n"
    assert not os.path.lexists(os.path.join(root, "rootfs"))
