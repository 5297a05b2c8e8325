"""An arm64 rootfs on an x86 host: debootstrap's programs run through qemu-user-static.

A whole arm64 minbase through kiosk.lxc.rootfs takes 2-6 minutes under qemu
user emulation on this 2-core machine (its second stage runs every package's
maintainer scripts emulated), too long for `make test`. What can break on a
host is proven here instead, for real: kiosk.lxc.rootfs accepts the foreign
build (its binfmt_misc check, in check mode), and the first stage of
`debootstrap --foreign --arch=arm64` (from the Debian mirror) gives a tree
whose arm64 programs run under chroot through the kernel's qemu-aarch64
binfmt_misc entry, as the one-pass build's second stage runs them.

binfmt_misc is enabled here if it is not (no service manager does it on a
host without systemd): mounted if needed, then `update-binfmts --enable`.
Where that cannot be done the test skips with the reason, and fails under CI=true.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time

import pytest
from play import run_module

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BINFMT = "/proc/sys/fs/binfmt_misc"
ENTRY = f"{BINFMT}/qemu-aarch64"
MIRROR = os.environ.get("KIOSK_TEST_MIRROR", "http://deb.debian.org/debian")


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"CI=true and arm64 emulation is not available: {reason}", pytrace=False)
    pytest.skip(f"ARM64 EMULATION UNAVAILABLE, test skipped: {reason}")


def _entry() -> list[str]:
    try:
        with open(ENTRY, encoding="utf-8") as fh:
            return [line.strip() for line in fh]
    except OSError:
        return []


@pytest.fixture(scope="module")
def qemu_aarch64():
    """The kernel runs arm64 programs through qemu-aarch64-static (with the F flag), enabled if need be.

    What this fixture enabled or mounted it disables and unmounts again: the machine is left as it was.
    """
    if platform.machine() == "aarch64":
        pytest.skip("this host is arm64 itself: nothing foreign to emulate")
    if os.geteuid() != 0:
        _unavailable("enabling binfmt_misc and chroot need root")
    for tool, package in (("qemu-aarch64-static", "qemu-user-static"), ("update-binfmts", "binfmt-support"),
                          ("debootstrap", "debootstrap")):  # fmt: skip
        if not shutil.which(tool):
            _unavailable(f"{tool} is missing: install {package} (bindep.txt, profile test)")
    mounted_here = enabled_here = False
    if _entry()[:1] != ["enabled"]:
        if not os.path.exists(f"{BINFMT}/status"):
            mounted = subprocess.run(
                ["mount", "-t", "binfmt_misc", "binfmt_misc", BINFMT], capture_output=True, text=True, check=False
            )
            if mounted.returncode != 0:
                _unavailable(f"binfmt_misc cannot be mounted here: {mounted.stderr.strip()}")
            mounted_here = True
        enabled = subprocess.run(
            ["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True, text=True, check=False
        )
        enabled_here = enabled.returncode == 0
        if enabled.returncode != 0 or _entry()[:1] != ["enabled"]:
            _unavailable(f"update-binfmts --enable qemu-aarch64 did not enable it: {enabled.stderr.strip()}")
    yield _entry()
    if enabled_here:
        subprocess.run(["update-binfmts", "--disable", "qemu-aarch64"], capture_output=True, check=False)
    if mounted_here:
        subprocess.run(["umount", BINFMT], capture_output=True, check=False)


def test_the_module_accepts_a_foreign_build_where_qemu_runs_it(tmp_path, qemu_aarch64):
    assert any(line.startswith("flags:") and "F" in line for line in qemu_aarch64), qemu_aarch64
    res = run_module(
        "kiosk.lxc.rootfs",
        {"method": "debootstrap", "arch": "arm64", "cache_dir": str(tmp_path / "cache"), "mirror": MIRROR},
        check=True,
    )
    assert res["_status"] == "changed", res.get("msg", res["_stdout"])
    assert res["actions"] == [f"build {res['path']} with debootstrap"]
    assert "-arm64-" in res["path"]
    assert not (tmp_path / "cache").exists(), "check mode touched the cache"


def test_arm64_programs_of_a_debootstrapped_tree_run_under_chroot(tmp_path, qemu_aarch64):
    root = tmp_path / "arm64"
    started = time.monotonic()
    first = subprocess.run(
        ["debootstrap", "--foreign", "--variant=minbase", "--arch=arm64", "bookworm", str(root), MIRROR],
        capture_output=True,
        text=True,
        check=False,
    )
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    first_stage = time.monotonic() - started
    ran = subprocess.run(["chroot", str(root), "/bin/true"], capture_output=True, text=True, check=False)
    assert (ran.returncode, ran.stderr) == (0, "")
    uname = subprocess.run(["chroot", str(root), "/bin/uname", "-m"], capture_output=True, text=True, check=False)
    assert uname.stdout.strip() == "aarch64", uname
    # A maintainer-script-like command line: the shell and coreutils of the new tree, emulated.
    sh = subprocess.run(
        ["chroot", str(root), "/bin/sh", "-c", "ls /bin/dpkg && echo ok"], capture_output=True, text=True, check=False
    )
    assert sh.stdout.splitlines()[-1:] == ["ok"], sh
    print(f"arm64 debootstrap first stage {first_stage:.0f} s; chroot /bin/true ok")
