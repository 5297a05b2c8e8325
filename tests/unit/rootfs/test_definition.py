"""The rootfs definition and its cache key (plain Python, no root)."""

from __future__ import annotations

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.rootfs import build


def deb(**over):
    base = {"method": "debootstrap", "release": "bookworm", "arch": "arm64", "packages": ["mpv", "curl"]}
    base.update(over)
    return build.desired(base)


def test_same_definition_same_key_whatever_the_package_order():
    assert deb()["key"] == deb(packages=["curl", "mpv", "mpv"])["key"]


@pytest.mark.parametrize(
    "change",
    [{"release": "trixie"}, {"arch": "amd64"}, {"packages": ["mpv"]}, {"audio": "pipewire"}, {"user": "kiosk"},
     {"networkd": False}, {"mirror": "http://mirror.invalid/debian"}],
)  # fmt: skip
def test_every_input_changes_the_key(change):
    assert deb(**change)["key"] != deb()["key"]


def test_default_name_says_release_and_arch():
    d = deb()
    assert d["name"] == f"bookworm-arm64-{d['key']}"


def test_plan_finds_a_finished_rootfs(tmp_path):
    """An arm64 definition: the binfmt_misc entry is one this test makes, never the machine's own."""
    binfmt = tmp_path / "binfmt_misc"
    binfmt.mkdir()
    (binfmt / "qemu-aarch64").write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\n")
    cache = tmp_path / "cache"
    d = deb()
    assert build.plan(str(cache), d, binfmt_dir=str(binfmt))["changed"] is True
    root = cache / d["name"]
    root.mkdir(parents=True)
    build.write_record(str(root), {"key": d["key"]})
    assert build.plan(str(cache), d, binfmt_dir=str(binfmt)) == {
        "changed": False, "actions": [], "housekeeping": [], "path": str(root), "before": d["key"],
        "after": d["key"],
    }  # fmt: skip


def test_foreign_arch_without_binfmt_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "host_deb_arch", lambda: "amd64")
    with pytest.raises(KioskError, match="arch: building an arm64 rootfs on a amd64 host needs qemu-user-static"):
        build._check_binfmt("arm64", str(tmp_path))
    (tmp_path / "qemu-aarch64").write_text(
        "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\n"
    )
    build._check_binfmt("arm64", str(tmp_path))
