"""The idmapped clone: owners shifted by the guest's offset, in the build directory (needs root for chown)."""

from __future__ import annotations

import json
import os
import stat

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.rootfs import build, idmap

MAP = {"uid": 200000, "gid": 300000, "count": 65536}
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def _base(tmp_path):
    base = tmp_path / "base"
    (base / "bin").mkdir(parents=True)
    (base / "bin" / "su").write_text("x")
    os.chmod(base / "bin" / "su", 0o4755)
    (base / "home").mkdir()
    os.chown(base / "home", 1000, 29)
    os.link(base / "bin" / "su", base / "bin" / "su-hardlink")
    os.symlink("su", base / "bin" / "link")
    (base / build.MANIFEST).write_text(json.dumps({"key": "k", "arch": "amd64", "networkd": False}))
    return base


def test_clone_with_idmap_is_owned_by_the_guest_ids_and_keeps_setuid(tmp_path):
    base = _base(tmp_path)
    d = build.desired({"method": "clone", "src": str(base), "name": "g1", "idmap": MAP})
    assert d["idmap"] == MAP
    assert d["key"] != build.desired({"method": "clone", "src": str(base), "name": "g1"})["key"]

    def run(argv):  # build.apply's contract: a failed command raises KioskError
        rc = os.spawnvp(os.P_WAIT, argv[0], argv)
        if rc != 0:
            raise KioskError(f"{argv[0]} failed (rc={rc})")

    cache = tmp_path / "cache"
    build.apply(str(cache), d, run)
    clone = cache / "g1"
    assert (clone.stat().st_uid, clone.stat().st_gid) == (200000, 300000)
    su = (clone / "bin" / "su").stat()
    assert (su.st_uid, su.st_gid) == (200000, 300000) and su.st_mode & stat.S_ISUID
    home = (clone / "home").stat()
    assert (home.st_uid, home.st_gid) == (201000, 300029)
    # Hard links are one inode, shifted once; symlinks themselves are shifted.
    assert (clone / "bin" / "su-hardlink").stat().st_uid == 200000
    assert os.lstat(clone / "bin" / "link").st_uid == 200000
    # The base is untouched, and a second run changes nothing.
    assert (base / "home").stat().st_uid == 1000
    assert build.plan(str(cache), d)["changed"] is False


def test_an_existing_clone_for_another_idmap_is_an_error_not_a_silent_reuse(tmp_path):
    base = _base(tmp_path)
    cache = tmp_path / "cache"
    plain = build.desired({"method": "clone", "src": str(base), "name": "g1"})
    build.apply(str(cache), plain, lambda argv: os.spawnvp(os.P_WAIT, argv[0], argv))
    mapped = build.desired({"method": "clone", "src": str(base), "name": "g1", "idmap": MAP})
    with pytest.raises(KioskError, match=r"^idmap: the clone .*/g1 is owned for idmap None"):
        build.plan(str(cache), mapped)


def test_an_owner_outside_the_mapped_range_fails(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "f").write_text("")
    os.chown(root / "f", 70000, 0)
    with pytest.raises(KioskError, match=r"^idmap.count: .*/f is owned by 70000:0"):
        idmap.shift(str(root), MAP)


@pytest.mark.parametrize(
    ("value", "start"),
    [("x", "idmap: must be a dict"), ({"uid": 1, "gid": 1}, "idmap.count"), ({"uid": 0, "gid": 1, "count": 1},
     "idmap.uid"), ({"uid": 1, "gid": 1, "count": 1, "x": 1}, "idmap: unknown keys x"),
     ({"uid": 2**32 - 5, "gid": 1, "count": 10}, "idmap.uid")],
)  # fmt: skip
def test_bad_idmap_names_the_option(value, start):
    with pytest.raises(KioskError) as err:
        idmap.validate(value)
    assert err.value.msg.startswith(start)


def test_idmap_is_for_clones_only():
    with pytest.raises(KioskError, match=r"^idmap: only a clone"):
        build.desired({"method": "debootstrap", "idmap": MAP})
