"""sound_passthrough's networkd drop-in in a guest rootfs whose root planted links (issue 18, item 3).

The rootfs is a real directory; the links are real symlinks pointing at a
tmp file that stands for the host's /etc/shadow (never the machine's own).
"""

from __future__ import annotations

import os
import stat

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.sound import plan
from lxml import etree

SECRET = "root:$6$hostsecret:19000::::::\n"
SYSFS = {"dropin": True}
NO_DROPIN = {"dropin": False}


@pytest.fixture
def shadow(tmp_path):
    path = tmp_path / "host-etc" / "shadow"
    path.parent.mkdir()
    path.write_text(SECRET)
    path.chmod(0o640)
    return path


@pytest.fixture
def rootfs(tmp_path):
    root = tmp_path / "rootfs"
    (root / os.path.dirname(plan.NETWORKD_DROPIN)).mkdir(parents=True)
    return root


def _untouched(path):
    st = os.lstat(path)
    assert path.read_text() == SECRET and stat.S_IMODE(st.st_mode) == 0o640 and stat.S_ISREG(st.st_mode)


def test_a_dropin_linked_to_a_host_file_does_not_leak_it_into_the_diff(rootfs, shadow):
    (rootfs / plan.NETWORKD_DROPIN).symlink_to(shadow)
    with pytest.raises(KioskError, match=r"kiosk-sound-sysfs\.conf: .*symbolic link.*refused$") as exc:
        change = plan.plan_dropin(str(rootfs), SYSFS)
        # what the old code did: the host's shadow as the drop-in's "before"
        assert SECRET not in (change or {}).get("before", "")
    assert SECRET not in exc.value.msg
    with pytest.raises(KioskError, match="symbolic link"):
        plan.plan_dropin(str(rootfs), NO_DROPIN)  # nor is it unlinked through the link
    _untouched(shadow)


def test_a_planted_temporary_name_does_not_overwrite_a_host_file(rootfs, shadow):
    (rootfs / (plan.NETWORKD_DROPIN + ".tmp")).symlink_to(shadow)
    plan.apply_dropin(plan.plan_dropin(str(rootfs), SYSFS))
    _untouched(shadow)
    assert (rootfs / plan.NETWORKD_DROPIN).read_text() == plan.NETWORKD_DROPIN_TEXT


def test_a_linked_directory_on_the_way_is_not_written_through(rootfs, tmp_path, shadow):
    unit_dir = rootfs / os.path.dirname(plan.NETWORKD_DROPIN)
    unit_dir.rmdir()
    unit_dir.symlink_to(shadow.parent)
    with pytest.raises(KioskError, match="symbolic link"):
        plan.plan_dropin(str(rootfs), SYSFS)
    assert os.listdir(shadow.parent) == ["shadow"]
    _untouched(shadow)


IDMAPPED = """<domain type='lxc'><name>p</name>
<idmap><uid start='0' target='100000' count='65536'/><gid start='0' target='100000' count='65536'/></idmap>
<devices><filesystem type='mount'><source dir='/srv/p'/><target dir='/'/></filesystem></devices></domain>"""


def test_profile_sysfs_is_refused_for_a_guest_with_an_idmap():
    want = plan.desired(cards=[], shared_nodes=[], selectors=None, profile="sysfs")
    root = etree.fromstring(IDMAPPED)
    before = etree.tostring(root)
    with pytest.raises(KioskError, match=r"^Guest 'p': profile sysfs .*idmap") as exc:
        plan.make_mutate(want)(root)
    assert "\n" not in exc.value.msg
    assert etree.tostring(root) == before
