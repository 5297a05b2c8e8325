"""ARM host preflight, from files recorded on arm64 systems (tests/fixtures/arm64/README.md says where each is from).

Each finding is seen on a recorded system where it holds and absent where it does not. Each test
lays the recorded files out as a host's /proc, /boot and /lib/modules under tmp_path and runs the
real gather() and problems() on them.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.host import preflight

REC = Path(__file__).resolve().parents[2] / "fixtures" / "arm64"
RELEASE = "6.1.0-50-arm64"
DEVICES = (REC.parent / "proc" / "devices").read_text(encoding="utf-8")


def rec(x: str | Path) -> Path:
    return x if isinstance(x, Path) else REC / x


def host(
    tmp_path: Path,
    *,
    cgroups: str | Path = "vm-proc-cgroups",
    cmdline: str | Path = "vm-proc-cmdline",
    config: str | Path | None = "vm-config-6.1.0-50-arm64",
    config_gz: str | Path | None = None,
    kallsyms: str | None = None,
    modules_dep: str | Path | None = "vm-modules.dep",
    modules_builtin: str | None = None,
    exe: str = "vm-python3.elf",
    machine: str = "aarch64",
) -> dict:
    """gather() of a host made of recorded files (a name in tests/fixtures/arm64, or a Path); None leaves it out."""
    proc, boot, mods = tmp_path / "proc", tmp_path / "boot", tmp_path / "lib/modules" / RELEASE
    for d in (proc / "self/ns", boot, mods):
        d.mkdir(parents=True, exist_ok=True)
    for ns in ("mnt", "uts", "ipc", "pid", "net", "user", "cgroup"):
        (proc / "self/ns" / ns).touch()
    (proc / "devices").write_text(DEVICES)
    shutil.copyfile(REC / "vm-mountinfo", proc / "self/mountinfo")
    shutil.copyfile(rec(cgroups), proc / "cgroups")
    shutil.copyfile(rec(cmdline), proc / "cmdline")
    shutil.copyfile(rec(exe), proc / "self/exe")
    if config:
        shutil.copyfile(rec(config), boot / f"config-{RELEASE}")
    if config_gz:
        with gzip.open(proc / "config.gz", "wb") as fh:
            fh.write(rec(config_gz).read_bytes())
    if kallsyms:
        shutil.copyfile(rec(kallsyms), proc / "kallsyms")
    if modules_dep:
        shutil.copyfile(rec(modules_dep), mods / "modules.dep")
    if modules_builtin:
        (mods / "modules.builtin").write_text(modules_builtin)
    return preflight.gather(
        proc=str(proc), run_dir=str(tmp_path / "run"), boot=str(boot), modules=str(tmp_path / "lib/modules"),
        uname=(machine, RELEASE), dpkg_status=str(tmp_path / "dpkg-status"),
    )  # fmt: skip


def findings(facts: dict) -> list[str]:
    fatal, warn = preflight.problems(facts, require_libvirt=False)
    return fatal + warn


def test_the_arm64_kiosk_vm_has_none_of_the_arm_findings(tmp_path):
    """Debian's arm64 kernel on cgroup v2, as recorded in the arm64 kiosk VM."""
    facts = host(tmp_path)
    assert facts["cgroup"]["version"] == "v2"
    assert facts["cgroup"]["memory"] is True
    assert facts["cgroup"]["bpf_device_control"] is True
    assert facts["snd_usb_audio"] is True
    assert facts["userland"] == {"bits": 64, "machine": "aarch64"}
    assert findings(facts) == []


# ----------------------------------------------------------------- memory controller
def test_memory_controller_off_on_raspberry_pi_os_says_to_add_cgroup_enable_memory(tmp_path):
    """Raspberry Pi OS's cmdline.txt (no cgroup_enable=memory) and a /proc/cgroups with memory disabled."""
    (msg,) = findings(host(tmp_path, cgroups="vm-proc-cgroups-memory-disabled", cmdline="rpi-cmdline.txt"))
    assert msg.startswith("The memory cgroup controller is disabled (/proc/cgroups)")
    assert "add cgroup_enable=memory to the kernel command line and reboot" in msg
    assert "/boot/firmware/cmdline.txt" in msg


def test_memory_controller_disabled_on_the_command_line_says_to_remove_that(tmp_path):
    """The arm64 VM booted with cgroup_disable=memory (recorded live)."""
    facts = host(tmp_path, cgroups="vm-proc-cgroups-memory-disabled", cmdline="vm-proc-cmdline-memory-disabled")
    (msg,) = findings(facts)
    assert "remove cgroup_disable=memory from the kernel command line and reboot" in msg
    fatal, _warn = preflight.problems(facts, require_libvirt=False)
    assert fatal == [msg], "guests with a memory limit cannot start: it stops the host role"


def test_memory_controller_on_with_cgroup_enable_memory(tmp_path):
    cmdline = tmp_path / "cmdline"
    cmdline.write_text((REC / "rpi-cmdline.txt").read_text().strip() + " cgroup_enable=memory\n")
    facts = host(tmp_path / "h", cmdline=cmdline)
    assert facts["cgroup"]["memory"] is True
    assert facts["cgroup"]["memory_disabled_by"] is None
    assert findings(facts) == []


# ----------------------------------------------------------------- BPF device control
def test_raspberry_pi_os_kernel_config_has_bpf_device_control(tmp_path):
    facts = host(tmp_path, config=None, config_gz="rpi-bcm2711_defconfig")
    assert facts["cgroup"]["bpf_device_control"] is True
    assert findings(facts) == []


def test_a_kernel_without_cgroup_bpf_is_refused_with_one_sentence(tmp_path):
    """The Raspberry Pi config with CONFIG_CGROUP_BPF taken out, as a kernel built without it has."""
    config = tmp_path / "config"
    text = (REC / "rpi-bcm2711_defconfig").read_text()
    config.write_text(text.replace("CONFIG_CGROUP_BPF=y", "# CONFIG_CGROUP_BPF is not set"))
    facts = host(tmp_path / "h", config=config)
    assert facts["cgroup"]["device_control"] is False
    (msg,) = findings(facts)
    assert msg.startswith("This kernel cannot attach cgroup v2 device programs")
    assert "CONFIG_CGROUP_BPF" in msg


def test_without_a_kernel_config_the_kernels_symbols_tell(tmp_path):
    facts = host(tmp_path, config=None, kallsyms="vm-kallsyms")
    assert facts["cgroup"]["bpf_device_control"] is True
    facts = host(tmp_path / "none", config=None, kallsyms=None)
    assert facts["cgroup"]["bpf_device_control"] is None, "unknown is not a finding"
    assert findings(facts) == []


# ----------------------------------------------------------------- snd-usb-audio
def test_no_snd_usb_audio_module_is_a_limit_with_the_fix(tmp_path):
    """The VM's modules.dep without snd-usb-audio's line, as a kernel built without it has."""
    dep = tmp_path / "modules.dep"
    lines = [ln for ln in (REC / "vm-modules.dep").read_text().splitlines() if "snd-usb-audio" not in ln]
    assert any("snd-aloop" in ln for ln in lines), "the recording has other sound modules"
    dep.write_text("\n".join(lines) + "\n")
    facts = host(tmp_path / "h", modules_dep=dep)
    assert facts["snd_usb_audio"] is False
    fatal, warn = preflight.problems(facts, require_libvirt=False)
    assert fatal == []
    (msg,) = warn
    assert msg.startswith(f"This kernel has no snd-usb-audio module (/lib/modules/{RELEASE})")
    assert "CONFIG_SND_USB_AUDIO=m" in msg


def test_snd_usb_audio_built_in_counts(tmp_path):
    facts = host(tmp_path, modules_dep=None, modules_builtin="kernel/sound/usb/snd-usb-audio.ko\n")
    assert facts["snd_usb_audio"] is True


def test_no_modules_directory_is_unknown_not_a_finding(tmp_path):
    facts = host(tmp_path, modules_dep=None)
    assert facts["snd_usb_audio"] is None
    assert findings(facts) == []


# ----------------------------------------------------------------- 32-bit userland
def test_a_32_bit_userland_on_a_64_bit_kernel_is_a_limit_with_the_fix(tmp_path):
    facts = host(tmp_path, exe="armhf-busybox.elf")
    assert facts["userland"] == {"bits": 32, "machine": "arm"}
    fatal, warn = preflight.problems(facts, require_libvirt=False)
    assert fatal == []
    (msg,) = warn
    assert msg.startswith("A 32-bit userland (arm) runs on this 64-bit kernel (aarch64)")
    assert "kiosk_rootfs_arch" in msg


@pytest.mark.parametrize(("exe", "machine"), [("armhf-busybox.elf", "armv7l"), ("vm-python3.elf", "aarch64")])
def test_a_userland_that_matches_its_kernel_is_fine(tmp_path, exe, machine):
    assert findings(host(tmp_path, exe=exe, machine=machine)) == []
