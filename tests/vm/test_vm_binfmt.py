"""binfmt_misc for a foreign-arch image: enabled for the build, then exactly what was there before.

The kernel's binfmt_misc is machine-wide state that other test sessions watch (tests/lib/machine.py
fails a session that ends with an entry it did not start with), so these tests do not mount or
register anything: a directory stands in for /proc/sys/fs/binfmt_misc and a stand-in for mount,
umount and update-binfmts changes it as the kernel would (status appears when mounted, the entry's
first line is enabled/disabled, its flags line says OCF as qemu-user-static registers it). The real
thing runs in `tests/vm/kiosk-vm build --arch arm64` and tests/integration/test_rootfs_arm64.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kiosk_vm import binfmt

ENTRY = "qemu-aarch64"


class Kernel:
    """A binfmt_misc directory and the commands that change it."""

    def __init__(self, path: Path, *, mounted: bool, entry: str | None, flags: str = "OCF", fail: str = ""):
        self.path, self.flags, self.fail, self.calls = path, flags, fail, []
        path.mkdir()
        if mounted:
            (path / "status").write_text("enabled\n")
            if entry:
                self._write(entry)

    def _write(self, state: str) -> None:
        (self.path / ENTRY).write_text(
            f"{state}\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: {self.flags}\n"
        )

    def run(self, cmd: list[str]) -> subprocess.CompletedProcess:
        self.calls.append(" ".join(cmd))
        if self.fail and self.fail in cmd:
            return subprocess.CompletedProcess(cmd, 2, "", f"{self.fail}: permission denied")
        if cmd[0] == "mount":
            (self.path / "status").write_text("enabled\n")
        elif cmd[0] == "umount":
            for f in self.path.iterdir():
                f.unlink()
        elif cmd[:2] == ["update-binfmts", "--enable"]:
            self._write("enabled")
        elif cmd[:2] == ["update-binfmts", "--disable"]:
            (self.path / ENTRY).unlink()
        return subprocess.CompletedProcess(cmd, 0, "", "")

    def state(self) -> list[str]:
        return sorted(f"{f.name}:{f.read_text().splitlines()[0]}" for f in self.path.iterdir())


@pytest.fixture(autouse=True)
def _tools(monkeypatch):
    """The checks for qemu-aarch64-static and update-binfmts see them installed."""
    monkeypatch.setattr(shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(binfmt, "host_arch", lambda: "amd64")


@pytest.mark.parametrize(
    ("mounted", "entry", "calls"),
    [
        # a fresh Debian 12 without systemd: nothing mounted
        (False, None, ["mount -t binfmt_misc binfmt_misc {d}", "update-binfmts --enable qemu-aarch64",
                       "update-binfmts --disable qemu-aarch64", "umount {d}"]),
        (True, None, ["update-binfmts --enable qemu-aarch64", "update-binfmts --disable qemu-aarch64"]),
        (True, "disabled", ["update-binfmts --enable qemu-aarch64", "update-binfmts --disable qemu-aarch64"]),
        (True, "enabled", []),  # someone else's: used, left alone
    ],
    ids=["unmounted", "mounted-no-entry", "entry-disabled", "entry-enabled"],
)  # fmt: skip
def test_the_build_sees_arm64_enabled_and_the_machine_is_left_as_it_was(tmp_path, mounted, entry, calls):
    k = Kernel(tmp_path / "binfmt_misc", mounted=mounted, entry=entry)
    before = k.state()
    with binfmt.foreign("arm64", str(k.path), k.run):
        assert binfmt.entry_lines(ENTRY, str(k.path))[0] == "enabled"
    assert k.calls == [c.format(d=k.path) for c in calls]
    if entry != "disabled":  # update-binfmts --disable unregisters; a disabled entry is then absent
        assert k.state() == before


def test_a_failing_build_still_leaves_the_machine_as_it_was(tmp_path):
    k = Kernel(tmp_path / "binfmt_misc", mounted=False, entry=None)
    with pytest.raises(RuntimeError, match="debootstrap"), binfmt.foreign("arm64", str(k.path), k.run):
        raise RuntimeError("debootstrap failed")
    assert k.state() == []
    assert k.calls[-1] == f"umount {k.path}"


def test_an_entry_without_the_fix_binary_flag_is_refused_and_undone(tmp_path):
    """Without F the interpreter is looked up inside the chroot, where it is not: the second stage would fail."""
    k = Kernel(tmp_path / "binfmt_misc", mounted=False, entry=None, flags="OC")
    with pytest.raises(binfmt.BinfmtError, match="not enabled with the F flag"):
        binfmt.enable("arm64", str(k.path), k.run)
    assert k.state() == []


def test_mount_refused_says_so(tmp_path):
    k = Kernel(tmp_path / "binfmt_misc", mounted=False, entry=None, fail="mount")
    with pytest.raises(binfmt.BinfmtError, match=r"cannot mount binfmt_misc on .*permission denied"):
        binfmt.enable("arm64", str(k.path), k.run)


def test_the_hosts_own_arch_needs_nothing(tmp_path):
    k = Kernel(tmp_path / "binfmt_misc", mounted=False, entry=None)
    assert binfmt.enable("amd64", str(k.path), k.run)["enabled"] == []
    assert k.calls == []


def test_missing_qemu_user_static_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "qemu-aarch64-static" else tool)
    k = Kernel(tmp_path / "binfmt_misc", mounted=False, entry=None)
    with pytest.raises(binfmt.BinfmtError, match="install qemu-user-static"):
        binfmt.enable("arm64", str(k.path), k.run)
    assert k.calls == []


def test_unknown_arch_is_refused(tmp_path):
    with pytest.raises(binfmt.BinfmtError, match="'mips'"):
        binfmt.enable("mips", str(tmp_path))


def _machine_binfmt() -> list[str]:
    try:
        return sorted(os.listdir(binfmt.BINFMT_DIR))
    except OSError:
        return []


@pytest.mark.skipif(os.geteuid() != 0, reason="a user namespace mapping every uid needs root")
def test_private_binfmt_is_there_inside_and_the_machines_is_untouched(monkeypatch):
    """The real thing: a user namespace with its own binfmt_misc (Linux 6.7+), as the arm64 image build uses."""
    monkeypatch.undo()  # the real shutil.which and host_arch
    if not binfmt.private_supported("arm64"):
        pytest.skip(
            "this kernel gives user namespaces no binfmt_misc of their own (before 6.7), "
            "refuses one here (in a chroot), "
            "or there is no qemu-user-static"
        )
    before = _machine_binfmt()
    probe = "head -n1 /proc/sys/fs/binfmt_misc/qemu-aarch64; id -u; echo $container"
    inside = subprocess.run(
        binfmt.private_command("arm64", ["sh", "-c", probe]), capture_output=True, text=True, check=False
    )
    assert (inside.returncode, inside.stdout.split()) == (0, ["enabled", "0", "lxc"]), inside.stderr
    assert _machine_binfmt() == before


@pytest.mark.skipif(os.geteuid() != 0, reason="a chroot and a mount namespace need root")
def test_a_namespace_the_kernel_refuses_is_an_error_not_a_hang(tmp_path):
    """In a chroot (the fresh-machine proof runs `make unit` in one) the kernel refuses a user namespace:
    the parent must see the child die and fail, where it waited forever on its pipe."""
    direct = [sys.executable, "-c", binfmt._USERNS, "true"]
    r = subprocess.run(direct, capture_output=True, text=True, check=False, timeout=60)
    if r.returncode == 0:  # user namespaces are allowed here: make a chroot, where the kernel refuses them
        root = tmp_path / "root"
        root.mkdir()
        script = 'mount --rbind / "$1" && exec chroot "$1" "$2" -c "$3" true'
        r = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", root, sys.executable,
             binfmt._USERNS],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
    assert r.returncode != 0
    assert "unshare(CLONE_NEWUSER)" in r.stderr
