"""A foreign-arch debootstrap needs an enabled qemu binfmt_misc entry with the F flag (no root, fake entries)."""

from __future__ import annotations

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.rootfs import build

ENTRY = "{state}\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: {flags}\noffset 0\n"


@pytest.mark.parametrize(
    ("state", "flags", "fragment"),
    [
        ("disabled", "PF", "is not enabled): install qemu-user-static and binfmt-support"),
        ("enabled", "P", "has no F (fix binary) flag, so arm64 programs cannot run inside the new rootfs"),
    ],
)
def test_an_entry_that_cannot_run_the_chroot_is_named(tmp_path, state, flags, fragment):
    (tmp_path / "qemu-aarch64").write_text(ENTRY.format(state=state, flags=flags))
    with pytest.raises(KioskError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        build._check_binfmt("arm64", str(tmp_path))


def test_a_foreign_build_is_refused_before_anything_is_touched(tmp_path, monkeypatch):
    """plan() checks it (check mode included), but only when a build is due."""
    monkeypatch.setattr(build, "host_deb_arch", lambda: "amd64")

    def refuse(arch, binfmt_dir):
        raise KioskError(f"no {arch}")

    monkeypatch.setattr(build, "_check_binfmt", refuse)
    d = build.desired({"method": "debootstrap", "arch": "arm64"})
    with pytest.raises(KioskError, match="no arm64"):
        build.plan(str(tmp_path / "cache"), d)
    assert not (tmp_path / "cache").exists()
    # A rootfs already built needs no qemu: nothing to check.
    (tmp_path / "cache" / d["name"]).mkdir(parents=True)
    build.write_record(str(tmp_path / "cache" / d["name"]), {"key": d["key"]})
    assert build.plan(str(tmp_path / "cache"), d)["changed"] is False
