"""The record of a clone lives beside it, out of the guest's reach (issue 18, item 5).

Real clones (cp -a of a small base, as build.apply runs it) in tmp cache
directories; the guest's root is played by the test writing into the
clone, as a guest's root can. Needs root (cp -a keeps owners).
"""

from __future__ import annotations

import json
import os
import stat

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.rootfs import build

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cp -a keeps owners only for root")
SECRET = "root:$6$hostsecret:19000::::::\n"


def run(argv):  # build.apply's contract: a failed command raises KioskError
    rc = os.spawnvp(os.P_WAIT, argv[0], argv)
    if rc != 0:
        raise KioskError(f"{argv[0]} failed (rc={rc})")


@pytest.fixture
def base(tmp_path):
    base = tmp_path / "base"
    (base / "etc").mkdir(parents=True)
    (base / "etc" / "os-release").write_text("ID=debian\n")
    (base / build.MANIFEST).write_text(json.dumps({"key": "k", "arch": "amd64", "networkd": False}))
    return base


def _clone(tmp_path, base, **over):
    d = build.desired({"method": "clone", "src": str(base), "name": "g1", **over})
    cache = tmp_path / "guests"
    build.apply(str(cache), d, run)
    clone = cache / "g1"
    (clone / "home").mkdir(exist_ok=True)
    (clone / "home" / "state").write_text("the guest's own data\n")
    return d, cache, clone


def test_a_guest_that_deletes_its_record_is_not_re_cloned(tmp_path, base):
    d, cache, clone = _clone(tmp_path, base)
    (clone / build.MANIFEST).unlink(missing_ok=True)  # guest root: rm /.kiosk-rootfs.json
    assert build.plan(str(cache), d)["changed"] is False
    build.apply(str(cache), d, run)
    assert (clone / "home" / "state").read_text() == "the guest's own data\n"


def test_a_guest_that_rewrites_its_record_does_not_stop_the_next_run(tmp_path, base):
    d, cache, clone = _clone(tmp_path, base)
    forged = {"key": "forged", "idmap": {"uid": 1, "gid": 1, "count": 1}}
    (clone / build.MANIFEST).write_text(json.dumps(forged))  # guest root rewrites it
    assert build.plan(str(cache), d)["changed"] is False
    assert (clone / "home" / "state").exists()


def test_a_guest_that_links_its_record_to_a_host_file_gets_no_re_clone(tmp_path, base):
    d, cache, clone = _clone(tmp_path, base)
    shadow = tmp_path / "host-shadow"
    shadow.write_text(SECRET)
    shadow.chmod(0o640)
    (clone / build.MANIFEST).unlink(missing_ok=True)
    (clone / build.MANIFEST).symlink_to(shadow)
    build.apply(str(cache), d, run)
    assert (clone / "home" / "state").exists()
    assert shadow.read_text() == SECRET and stat.S_IMODE(shadow.stat().st_mode) == 0o640


def test_the_record_is_beside_the_clone_and_owned_by_root(tmp_path, base):
    d, cache, clone = _clone(tmp_path, base)
    record = cache / ".kiosk-rootfs-g1.json"
    assert json.loads(record.read_text())["key"] == d["key"]
    st = record.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o644)
    assert not (clone / build.MANIFEST).exists()
    build.apply(str(cache), dict(d, state="absent"), run, state="absent")
    assert not clone.exists() and not record.exists()


def test_an_old_clone_with_its_record_inside_is_adopted_without_a_re_clone(tmp_path, base):
    """A clone made by kiosk.lxc 0.1: the record inside, none beside."""
    d = build.desired({"method": "clone", "src": str(base), "name": "g1"})
    clone = tmp_path / "guests" / "g1"
    (clone / "home").mkdir(parents=True)
    (clone / "home" / "state").write_text("kept\n")
    (clone / build.MANIFEST).write_text(json.dumps(dict(d, cow=False)))
    before = {p.relative_to(clone): p.read_bytes() for p in clone.rglob("*") if p.is_file()}
    planned = build.plan(str(tmp_path / "guests"), d)
    # Bookkeeping of the cache, not a change of the guest: the upgrade run of a 0.1 kiosk reports changed=0.
    assert planned["changed"] is False and planned["actions"] == []
    assert planned["housekeeping"] == [f"copy the record of {clone} out of it to {build.record_path(str(clone))}"]
    build.apply(str(tmp_path / "guests"), d, run)
    assert {p.relative_to(clone): p.read_bytes() for p in clone.rglob("*") if p.is_file()} == before  # untouched
    assert build.read_record(str(clone)) == (dict(d, cow=False), False)  # the copy beside it counts
    again = build.plan(str(tmp_path / "guests"), d)
    assert (again["changed"], again["housekeeping"]) == (False, [])
    # The old file is the guest's now: what it writes there is never read.
    (clone / build.MANIFEST).write_text(json.dumps({"key": "forged", "idmap": {"uid": 1, "gid": 1, "count": 1}}))
    assert build.plan(str(tmp_path / "guests"), d) == again


def test_a_clone_directory_with_no_record_at_all_is_refused_not_replaced(tmp_path, base):
    d = build.desired({"method": "clone", "src": str(base), "name": "g1"})
    clone = tmp_path / "guests" / "g1"
    (clone / "home").mkdir(parents=True)
    (clone / "home" / "state").write_text("kept\n")
    with pytest.raises(KioskError, match=r"^name: .*/g1 exists and has no record .*not replaced"):
        build.apply(str(tmp_path / "guests"), d, run)
    assert (clone / "home" / "state").read_text() == "kept\n"


def test_clone_writes_its_hostname_over_a_link_in_the_base_not_through_it(tmp_path, base):
    shadow = tmp_path / "host-shadow"
    shadow.write_text(SECRET)
    (base / "etc" / "hostname").symlink_to(shadow)
    _d, _cache, clone = _clone(tmp_path, base)
    assert shadow.read_text() == SECRET
    assert not (clone / "etc" / "hostname").is_symlink() and (clone / "etc" / "hostname").read_text() == "g1\n"
