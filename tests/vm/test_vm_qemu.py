"""The qemu command line, and that every VM the harness starts is stopped again.

The process tests run a REAL qemu-system-x86_64 under TCG. Instead of the
kiosk image (two minutes to build) they boot nothing: without -kernel, SeaBIOS
finds no bootable disk and idles, so SSH never answers - exactly the VM that
must still be cleaned up. Nothing here needs root or the network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from kiosk_vm import vm as vmmod
from kiosk_vm.image import Image
from kiosk_vm.vm import BootError, Fleet, destroy, mac_for, qemu_command, stop_vm

needs_qemu = pytest.mark.skipif(
    not shutil.which(vmmod.QEMU) or not shutil.which("qemu-img"),
    reason="NO QEMU: apt-get install qemu-system-x86 qemu-utils",
)


def _cmd(tmp_path, **kw):
    args = dict(
        name="kiosk-vm-0", image=Image(tmp_path / "img"), overlay=tmp_path / "vm/overlay.qcow2",
        port=40022, pidfile=tmp_path / "vm/qemu.pid", serial_log=tmp_path / "vm/serial.log",
        mac=mac_for(0),
    )  # fmt: skip
    args.update(kw)
    return qemu_command(**args)


def _opt(cmd: list[str], flag: str) -> list[str]:
    return [cmd[i + 1] for i, a in enumerate(cmd) if a == flag]


def test_command_uses_tcg_and_the_images_kernel_and_initrd(tmp_path):
    cmd = _cmd(tmp_path)
    assert _opt(cmd, "-accel") == ["tcg"]
    assert _opt(cmd, "-kernel") == [str(tmp_path / "img/vmlinuz")]
    assert _opt(cmd, "-initrd") == [str(tmp_path / "img/initrd.img")]
    assert "root=LABEL=kiosk-root" in _opt(cmd, "-append")[0]


def test_disk_is_the_vms_own_overlay_on_virtio(tmp_path):
    (drive,) = _opt(_cmd(tmp_path), "-drive")
    fields = dict(f.split("=", 1) for f in drive.split(","))
    assert fields["file"] == str(tmp_path / "vm/overlay.qcow2")
    assert (fields["if"], fields["format"]) == ("virtio", "qcow2")
    assert "img/disk.raw" not in " ".join(_cmd(tmp_path)), "the cached image is never written"


def test_only_network_is_user_nat_with_ssh_on_loopback(tmp_path):
    cmd = _cmd(tmp_path, port=41234)
    assert "-nodefaults" in cmd, "no default NIC besides ours"
    (netdev,) = _opt(cmd, "-netdev")
    assert netdev == "user,id=net0,hostfwd=tcp:127.0.0.1:41234-:22"
    assert not any(a.startswith(("tap", "bridge", "socket")) for a in _opt(cmd, "-netdev"))


def test_qemu_daemonizes_with_a_pidfile(tmp_path):
    cmd = _cmd(tmp_path)
    assert "-daemonize" in cmd
    assert _opt(cmd, "-pidfile") == [str(tmp_path / "vm/qemu.pid")]


def test_arm64_command_is_the_virt_board_with_its_own_console(tmp_path):
    cmd = _cmd(tmp_path, arch="arm64")
    assert cmd[0] == "qemu-system-aarch64"
    assert _opt(cmd, "-machine") == ["virt"] and _opt(cmd, "-cpu") == ["cortex-a57"]
    assert _opt(cmd, "-accel") == ["tcg"]
    assert "console=ttyAMA0" in _opt(cmd, "-append")[0].split()
    assert _opt(cmd, "-netdev") == ["user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22"]
    assert _cmd(tmp_path)[0] == "qemu-system-x86_64"
    assert "console=ttyS0" in _opt(_cmd(tmp_path), "-append")[0].split()


def test_unknown_arch_is_refused_before_qemu_runs(tmp_path):
    with pytest.raises(ValueError, match="no qemu machine known for 'mips'"):
        _cmd(tmp_path, arch="mips")


def test_macs_differ_per_vm():
    assert len({mac_for(i) for i in range(300)}) == 300


# ----------------------------------------------------------------- real processes
def _fake_image(tmp_path: Path, kernel: bytes = b"not a kernel", arch: str | None = None) -> Image:
    img = Image(tmp_path / "img")
    img.path.mkdir()
    if arch:
        (img.path / "manifest.json").write_text(json.dumps({"inputs": {"arch": arch}}))
    subprocess.run(["truncate", "-s", "16M", str(img.disk)], check=True)
    img.kernel.write_bytes(kernel)
    img.initrd.write_bytes(b"")
    img.ssh_key.write_text("")
    return img


def _no_kernel(monkeypatch):
    real = vmmod.qemu_command

    def without_kernel(**kw):
        cmd = real(**kw)
        for flag in ("-kernel", "-initrd", "-append"):
            i = cmd.index(flag)
            del cmd[i : i + 2]
        return cmd

    monkeypatch.setattr(vmmod, "qemu_command", without_kernel)


def _qemus_on(path: Path) -> list[int]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "qemu-system" in argv and str(path) in argv:
            out.append(int(pid))
    return out


@needs_qemu
def test_vm_that_never_answers_ssh_is_stopped_and_its_state_removed(tmp_path, monkeypatch):
    _no_kernel(monkeypatch)
    fleet = Fleet(tmp_path / "state", _fake_image(tmp_path), count=2, ssh_timeout=2)
    with pytest.raises(BootError, match=r"no SSH on 127\.0\.0\.1"):
        fleet.up()
    assert _qemus_on(tmp_path / "state") == []
    assert not (tmp_path / "state").exists()
    assert (tmp_path / "img/disk.raw").stat().st_size == 16 << 20


@pytest.mark.skipif(not shutil.which("qemu-system-aarch64"), reason="NO QEMU: apt-get install qemu-system-arm")
def test_arm64_vm_that_never_answers_ssh_is_stopped_and_its_state_removed(tmp_path, monkeypatch):
    """A real qemu-system-aarch64 (virt board, no kernel: it idles), as an arm64 image's manifest asks."""
    _no_kernel(monkeypatch)
    fleet = Fleet(tmp_path / "state", _fake_image(tmp_path, arch="arm64"), count=1, ssh_timeout=2)
    started = []
    real_start = fleet._start
    monkeypatch.setattr(
        fleet, "_start", lambda vm: (real_start(vm), started.append(Path(f"/proc/{vm.pid()}/exe").resolve().name))
    )
    with pytest.raises(BootError, match=r"no SSH on 127\.0\.0\.1"):
        fleet.up()
    assert started == ["qemu-system-aarch64"]
    assert _qemus_on(tmp_path / "state") == []
    assert not (tmp_path / "state").exists()


@needs_qemu
def test_qemu_that_cannot_start_is_reported_and_nothing_is_left(tmp_path):
    fleet = Fleet(tmp_path / "state", _fake_image(tmp_path), count=1, ssh_timeout=2)
    with pytest.raises(BootError, match="qemu failed to start"):
        fleet.up()
    assert _qemus_on(tmp_path / "state") == []
    assert not (tmp_path / "state").exists()


@needs_qemu
def test_destroy_from_another_process_stops_kept_vms(tmp_path, monkeypatch):
    """`up` hands the VMs over (keep) and exits; a later `destroy` finds them by pid file."""
    _no_kernel(monkeypatch)
    fleet = Fleet(tmp_path / "state", _fake_image(tmp_path), count=1)
    vm = fleet.vms[0]
    vm.dir.mkdir(parents=True)
    try:
        fleet._start(vm)
        fleet.keep()
        pid = vm.pid()
        assert vm.running() and _qemus_on(tmp_path / "state") == [pid]
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]);from kiosk_vm.vm import destroy; print(destroy(sys.argv[2]))"
        )
        vm_src = str(Path(vmmod.__file__).parents[1])
        r = subprocess.run(
            ["python3", "-c", code, vm_src, str(tmp_path / "state")],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert "kiosk-vm-0" in r.stdout
        assert _qemus_on(tmp_path / "state") == []
        assert not (tmp_path / "state").exists()
    finally:
        destroy(tmp_path / "state")


def test_pid_file_naming_another_process_is_not_signalled(tmp_path):
    """A stale pid file whose pid now belongs to something else must not kill it."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        vm_dir = tmp_path / "kiosk-vm-0"
        vm_dir.mkdir()
        (vm_dir / "qemu.pid").write_text(f"{sleeper.pid}\n")
        assert stop_vm(vm_dir) is False
        destroy(tmp_path)
        time.sleep(0.2)
        assert sleeper.poll() is None, "destroy killed a process that is not its qemu"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_state_dir_in_use_is_refused(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "fleet.json").write_text("{}")
    with pytest.raises(BootError, match="in use"):
        Fleet(tmp_path / "state", Image(tmp_path / "img")).up()
    assert (tmp_path / "state" / "fleet.json").exists()


def test_vm_names_are_checked_before_anything_starts(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        Fleet(tmp_path / "s", Image(tmp_path / "img"), names=["a", "a"])
    with pytest.raises(ValueError, match="unique"):
        Fleet(tmp_path / "s", Image(tmp_path / "img"), names=["../escape"])
    fleet = Fleet(tmp_path / "s", Image(tmp_path / "img"), names=["kiosk-a", "kiosk-b"])
    assert [v.dir.name for v in fleet.vms] == ["kiosk-a", "kiosk-b"]
    assert not (tmp_path / "s").exists()


def test_load_without_recorded_vms_says_so(tmp_path):
    with pytest.raises(BootError, match="no VMs recorded"):
        Fleet.load(tmp_path)


def test_kernel_args_are_appended_one_word_each(tmp_path):
    cmd = _cmd(tmp_path, arch="arm64", kernel_args=("cgroup_disable=memory",))
    assert _opt(cmd, "-append")[0].split()[-1] == "cgroup_disable=memory"
    with pytest.raises(ValueError, match="kernel_args"):
        _cmd(tmp_path, kernel_args=("quiet init=/bin/sh",))
