"""common.guestfs and common.files with real files and real symlinks in a tmp "guest root".

Each planted link points at a file outside the root that stands for a host
file (a tmp file, never the machine's own /etc); the test checks that file's
content, owner and mode are untouched.
"""

from __future__ import annotations

import os
import stat

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common import files, guestfs


@pytest.fixture
def host_secret(tmp_path):
    """A file outside the guest root standing for the host's /etc/shadow."""
    secret = tmp_path / "host" / "shadow"
    secret.parent.mkdir()
    secret.write_text("root:$6$secret:19000::::::\n")
    secret.chmod(0o640)
    return secret


def _untouched(path, text="root:$6$secret:19000::::::\n", mode=0o640):
    st = os.lstat(path)
    assert path.read_text() == text and stat.S_IMODE(st.st_mode) == mode and st.st_uid == os.getuid()


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    return r


def test_write_file_makes_directories_and_reports_before_and_after(root):
    result = guestfs.write_file(str(root), "etc/systemd/system/x.service", "[Unit]\n", mode=0o640)
    path = f"{root}/etc/systemd/system/x.service"
    assert result == {"changed": True, "before": None, "after": "[Unit]\n", "path": path}
    target = root / "etc/systemd/system/x.service"
    assert target.read_text() == "[Unit]\n" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert stat.S_IMODE((root / "etc/systemd").stat().st_mode) == 0o755
    again = guestfs.write_file(str(root), "etc/systemd/system/x.service", "[Unit]\n", mode=0o640)
    assert again["changed"] is False and again["before"] == "[Unit]\n"
    # the right text with another mode is rewritten
    target.chmod(0o666)
    assert guestfs.write_file(str(root), "etc/systemd/system/x.service", "[Unit]\n", mode=0o640)["changed"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    # no temporary file is left behind
    assert sorted(os.listdir(root / "etc/systemd/system")) == ["x.service"]


def test_write_file_in_check_mode_touches_nothing(root):
    result = guestfs.write_file(str(root), "etc/new/dir/f", "x", check_mode=True)
    assert result["changed"] and result["before"] is None
    assert not (root / "etc/new").exists()


def test_write_file_owner_goes_to_the_file_and_the_directories_it_made(root):
    guestfs.write_file(str(root), "etc/made/f", "x", uid=4321, gid=4322)
    for path in (root / "etc/made", root / "etc/made/f"):
        assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4322)
    assert root.joinpath("etc").stat().st_uid == os.getuid()  # an existing directory keeps its owner


def test_a_planted_link_to_a_host_file_is_neither_read_nor_written(root, host_secret):
    (root / "etc" / "planted.conf").symlink_to(host_secret)
    with pytest.raises(guestfs.GuestPathError, match=r"planted\.conf: .*symbolic link.*refused$"):
        guestfs.read_file(str(root), "etc/planted.conf")
    with pytest.raises(guestfs.GuestPathError, match="symbolic link"):
        guestfs.write_file(str(root), "etc/planted.conf", "overwritten\n")
    with pytest.raises(guestfs.GuestPathError, match="symbolic link"):
        guestfs.remove_file(str(root), "etc/planted.conf")
    _untouched(host_secret)
    assert (root / "etc" / "planted.conf").is_symlink()


def test_a_planted_directory_link_is_not_walked_through(root, host_secret):
    (root / "etc" / "systemd").symlink_to(host_secret.parent)
    with pytest.raises(guestfs.GuestPathError, match="symbolic link"):
        guestfs.write_file(str(root), "etc/systemd/shadow", "overwritten\n")
    with pytest.raises(guestfs.GuestPathError, match="symbolic link"):
        guestfs.read_file(str(root), "etc/systemd/shadow")
    _untouched(host_secret)
    assert os.listdir(host_secret.parent) == ["shadow"]


def test_relative_links_and_dotdot_do_not_climb_out(root, host_secret):
    (root / "etc" / "up").symlink_to("../../host")
    with pytest.raises(guestfs.GuestPathError):
        guestfs.read_file(str(root), "etc/up/shadow")
    with pytest.raises(ValueError):
        guestfs.read_file(str(root), "etc/../../host/shadow")
    _untouched(host_secret)


def test_a_fifo_or_a_device_node_is_never_opened(root):
    os.mkfifo(root / "etc" / "fifo")  # opening it for reading would block forever
    with pytest.raises(guestfs.GuestPathError, match="not a regular file"):
        guestfs.read_file(str(root), "etc/fifo")
    with pytest.raises(guestfs.GuestPathError, match="not a regular file"):
        guestfs.write_file(str(root), "etc/fifo", "x")


def test_a_file_where_a_directory_belongs_is_refused(root):
    (root / "etc" / "systemd").write_text("not a dir")
    with pytest.raises(guestfs.GuestPathError, match="not a directory"):
        guestfs.write_file(str(root), "etc/systemd/x", "x")


def test_without_openat2_the_operation_is_refused_not_done_by_following_links(root, monkeypatch):
    """A syscall number no kernel has stands for a kernel without openat2 (ENOSYS)."""
    monkeypatch.setattr(guestfs, "SYS_OPENAT2", 0x7FFF)
    with pytest.raises(guestfs.GuestPathError, match="no openat2"):
        guestfs.write_file(str(root), "etc/x", "x")
    assert not (root / "etc" / "x").exists()


def test_write_atomic_replaces_a_planted_link_instead_of_following_it(tmp_path, host_secret):
    path = tmp_path / "conf"
    path.symlink_to(host_secret)
    files.write_atomic(str(path), "mine\n", mode=0o600)
    assert not path.is_symlink() and path.read_text() == "mine\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    _untouched(host_secret)


def test_write_atomic_keeps_the_mode_when_asked_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "d" / "subuid"
    files.write_atomic(str(path), "a\n", mode=None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    path.chmod(0o600)
    files.write_atomic(str(path), b"b\n", mode=None)
    assert path.read_text() == "b\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["subuid"]


def test_write_atomic_onto_a_directory_fails_and_cleans_up(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(OSError):
        files.write_atomic(str(tmp_path / "d"), "x")
    assert sorted(os.listdir(tmp_path)) == ["d"]


def test_make_link_keeps_or_replaces_and_never_walks_a_linked_directory(root, host_secret):
    assert guestfs.make_link(str(root), "etc/resolv.conf", "../run/stub") is True
    assert os.readlink(root / "etc" / "resolv.conf") == "../run/stub"
    assert guestfs.make_link(str(root), "etc/resolv.conf", "/other") is False
    (root / "etc" / "resolv.conf").unlink()
    (root / "etc" / "resolv.conf").symlink_to(host_secret)
    assert guestfs.make_link(str(root), "etc/resolv.conf", "../run/stub", replace=True) is True
    assert os.readlink(root / "etc" / "resolv.conf") == "../run/stub"
    (root / "etc" / "wants").symlink_to(host_secret.parent)
    with pytest.raises(guestfs.GuestPathError, match="symbolic link"):
        guestfs.make_link(str(root), "etc/wants/x.service", "/lib/x.service")
    assert os.listdir(host_secret.parent) == ["shadow"]
    _untouched(host_secret)
