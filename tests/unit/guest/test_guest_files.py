"""The files kiosk.lxc.guest puts into a guest's rootfs, against a real tmp rootfs with planted links.

A planted link stands for what a guest's root can do to its own rootfs: point
a path host-side code writes at a host file. The plan must refuse it, not
follow it, and the file outside (standing for a host file) stays as it was.
"""

from __future__ import annotations

import os

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.guest import files

UID = os.getuid()


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "rootfs"
    (r / "etc" / "systemd" / "system").mkdir(parents=True)
    return r


def _want(profile="confined", sound=True, sound_profile="udev_data"):
    return files.wanted(profile, {"cards": None} if sound else None, sound_profile)


def test_plan_then_apply_then_nothing_left_to_do(root):
    changes = files.plan(str(root), _want(), UID, UID)
    assert [(c.kind, c.rel) for c in changes] == [("write", files.SOUND_UNIT), ("link", files.SOUND_UNIT_LINK)]
    diff = changes[0].diff(str(root), "g1")
    assert (
        diff["before"] == "" and "chgrp audio /dev/snd/*" in diff["after"] and diff["after_header"].startswith("g1: ")
    )
    files.apply(str(root), changes)
    assert (root / files.SOUND_UNIT).read_text() == files.SOUND_UNIT_TEXT
    assert os.readlink(root / files.SOUND_UNIT_LINK) == "../kiosk-sound-nodes.service"
    assert files.plan(str(root), _want(), UID, UID) == []


def test_what_is_no_longer_wanted_is_removed(root):
    files.apply(str(root), files.plan(str(root), _want(), UID, UID))
    (root / "etc" / "tmpfiles.d").mkdir()
    (root / files.OLD_TMPFILES).write_text("z /dev/snd/* 0660 root audio\n")
    changes = files.plan(str(root), _want(sound=False), UID, UID)
    assert sorted(c.rel for c in changes if c.kind == "remove") == sorted(
        [files.SOUND_UNIT, files.SOUND_UNIT_LINK, files.OLD_TMPFILES]
    )
    files.apply(str(root), changes)
    assert not (root / files.SOUND_UNIT).exists() and not os.path.lexists(root / files.SOUND_UNIT_LINK)
    assert not (root / files.OLD_TMPFILES).exists()


def test_sysfs_gets_the_networkd_dropin(root):
    changes = files.plan(str(root), _want(profile="privileged", sound_profile="sysfs"), UID, UID)
    assert [c.rel for c in changes] == [files.NETWORKD_DROPIN]


def test_a_planted_link_is_refused_and_the_host_file_stays(root, tmp_path):
    host_file = tmp_path / "host-passwd"
    host_file.write_text("root:x:0:0::/root:/bin/sh\n")
    # The guest links its unit, then a directory on the way, to host paths.
    (root / files.SOUND_UNIT).symlink_to(host_file)
    with pytest.raises(KioskError, match="symbolic link"):
        files.plan(str(root), _want(), UID, UID)
    (root / files.SOUND_UNIT).unlink()
    (root / "etc" / "systemd" / "system" / "sysinit.target.wants").symlink_to(tmp_path)
    with pytest.raises(KioskError, match="symbolic link"):
        files.plan(str(root), _want(), UID, UID)
    with pytest.raises(KioskError, match="symbolic link"):
        files.apply(str(root), [files.Change("link", files.SOUND_UNIT_LINK, "../x", None, UID, UID)])
    assert host_file.read_text() == "root:x:0:0::/root:/bin/sh\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["host-passwd", "rootfs"]


def test_a_file_where_the_link_goes_is_refused(root):
    wants = root / "etc" / "systemd" / "system" / "sysinit.target.wants"
    wants.mkdir()
    (wants / "kiosk-sound-nodes.service").write_text("not a link\n")
    with pytest.raises(KioskError, match="not a symbolic link"):
        files.plan(str(root), _want(), UID, UID)
