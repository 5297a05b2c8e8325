"""cgroup v2 device rules against a real kernel device program on this host's cgroup2 mount.

This host is hybrid: libvirt's guests live in the v1 devices controller, so
libvirt never attaches its cgroup v2 program here. To run the v2 code for
real anyway, the test stands in for libvirt: it loads a program that does
libvirt's four map lookups (src/util/vircgroupv2devices.c) with a map of
libvirt's shape, attaches it to a fresh cgroup under the cgroup2 mount, and
puts a shell that open()s a `c 116:77` node into that cgroup. Everything
else is the collection's own code: finding the program and its map from the
cgroup path, reading, allowing and denying. The v1 devices cgroup of this
test process allows everything, so the program alone decides.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import struct
import subprocess
from pathlib import Path

import guest as guestlib
import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import cgroupfs, rules, v2
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup.rules import Rule

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def ld_imm64(dst: int, value: int, src: int = 0) -> bytes:
    low, high = value & 0xFFFFFFFF, value >> 32
    return insn(0x18, dst, src, 0, struct.unpack("<i", struct.pack("<I", low))[0]) + insn(
        0, 0, 0, 0, struct.unpack("<i", struct.pack("<I", high))[0]
    )


def libvirt_like_program(map_fd: int) -> bytes:
    """libvirt's lookups: exact, major:*, *:minor, *:*; allow when (access_type & value) == access_type."""
    mov_reg, ldx_w, lsh_imm, or_reg, and_reg, add_imm = 0xBF, 0x61, 0x67, 0x4F, 0x5F, 0x07
    stx_dw, call, jeq_imm, jne_reg, mov_imm, exit_ = 0x7B, 0x85, 0x15, 0x5D, 0xB7, 0x95
    keys = [
        insn(ldx_w, 2, 6, 4) + insn(lsh_imm, 2, imm=32) + insn(ldx_w, 1, 6, 8) + insn(or_reg, 2, 1),
        insn(ldx_w, 2, 6, 4) + insn(lsh_imm, 2, imm=32) + ld_imm64(1, 0xFFFFFFFF) + insn(or_reg, 2, 1),
        insn(ldx_w, 2, 6, 8) + ld_imm64(1, 0xFFFFFFFF00000000) + insn(or_reg, 2, 1),
        ld_imm64(2, 0xFFFFFFFFFFFFFFFF),
    ]
    prog = insn(mov_reg, 6, 1)
    for key in keys:
        prog += key + insn(stx_dw, 10, 2, -8) + insn(mov_reg, 2, 10) + insn(add_imm, 2, imm=-8)
        prog += ld_imm64(1, map_fd, src=1) + insn(call, imm=1)  # src=1: BPF_PSEUDO_MAP_FD
        prog += insn(jeq_imm, 0, off=6, imm=0)
        prog += insn(ldx_w, 1, 0, 0) + insn(ldx_w, 2, 6, 0) + insn(and_reg, 1, 2) + insn(jne_reg, 1, 2, 2)
        prog += insn(mov_imm, 0, imm=1) + insn(exit_)
    return prog + insn(mov_imm, 0, imm=0) + insn(exit_)


def load_and_attach(bpf: v2.Bpf, map_fd: int, cgroup_dir: Path) -> int:
    code = ctypes.create_string_buffer(libvirt_like_program(map_fd))
    license_ = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(65536)
    attr = bpf.attr(
        (0, "I", BPF_PROG_TYPE_CGROUP_DEVICE),
        (4, "I", (len(code) - 1) // 8),
        (8, "Q", ctypes.addressof(code)),
        (16, "Q", ctypes.addressof(license_)),
        (24, "I", 1),
        (28, "I", len(log)),
        (32, "Q", ctypes.addressof(log)),
    )
    try:
        prog_fd = bpf.call(BPF_PROG_LOAD, attr)
    except OSError as exc:
        pytest.fail(f"the stand-in program did not load: {exc}\n{log.value.decode(errors='replace')[-1500:]}")
    cg_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        bpf.call(BPF_PROG_ATTACH, bpf.attr((0, "I", cg_fd), (4, "I", prog_fd), (8, "I", v2.BPF_CGROUP_DEVICE)))
    finally:
        os.close(cg_fd)
    return prog_fd


@pytest.fixture
def v2_cgroup(tmp_path):
    """A cgroup2 directory with a libvirt-like device program: (path, mount, probe())."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    _v1, mount = cgroupfs.cgroup_mounts()
    if mount is None:
        pytest.skip("no cgroup2 mount on this host")
    bpf = v2.Bpf()
    cg = Path(mount) / f"kiosk-test-{secrets.token_hex(3)}"
    cg.mkdir()
    map_fd = bpf.create_hash_map(64)
    # What libvirt allows every guest, in part.
    bpf.update(map_fd, (1 << 32) | 3, (7 << 16) | 2)  # c 1:3 rwm, as libvirt encodes it
    prog_fd = load_and_attach(bpf, map_fd, cg)
    node = guestlib.mknod_char(tmp_path / "snd", 116, 77)

    def probe() -> str:
        proc = subprocess.run(
            ["sh", "-c", f"echo $$ > {cg}/cgroup.procs && exec cat {node} </dev/null"],
            capture_output=True,
            text=True,
            check=False,
        )
        return proc.stderr.strip() or "OK"

    yield cg, mount, probe
    os.close(prog_fd)
    os.close(map_fd)
    cg.rmdir()


def test_rules_go_into_the_attached_programs_map(v2_cgroup):
    cg, mount, probe = v2_cgroup
    assert guestlib.ERRNO_TEXT["EPERM"] in probe()

    # On this hybrid host cgroupfs picks the v1 controller for guests; the v2 backend is used directly.
    dev = v2.V2Devices(str(cg), mount=mount)
    assert [str(r) for r in dev.read()] == ["c 1:3 rwm"]

    wanted = [Rule("c", 116, None, "rw")]
    writes = rules.plan_allow(dev.read(), wanted, dev.key)
    assert [str(r) for r in writes] == ["c 116:* rw"]
    for rule in writes:
        dev.allow(rule)
    assert guestlib.ERRNO_TEXT["ENXIO"] in probe()
    assert rules.plan_allow(dev.read(), wanted, dev.key) == []

    for rule in rules.plan_deny(dev.read(), wanted, dev.key):
        dev.deny(rule)
    assert guestlib.ERRNO_TEXT["EPERM"] in probe()
    assert [str(r) for r in dev.read()] == ["c 1:3 rwm"]
    dev.close()


def test_the_program_is_found_from_a_child_cgroup(v2_cgroup):
    cg, mount, _probe = v2_cgroup
    child = cg / "payload"
    child.mkdir()
    try:
        dev = v2.V2Devices(str(child), mount=mount)
        assert [str(r) for r in dev.read()] == ["c 1:3 rwm"]
        dev.close()
    finally:
        child.rmdir()
