"""cgroup v2: libvirt's BPF map encoding and our map edits.

The encoding tests are pure. The map tests use a REAL kernel BPF hash map of
libvirt's shape (u64 -> u32), created by the test, because no libvirt guest
on cgroup v2 can run on this CI host (cgroup v1): what libvirt's program
would then see is checked by `libvirt_allows`, a transcription of the four
lookups in libvirt's program (src/util/vircgroupv2devices.c). The kiosk VM
scenario runs the same code against libvirt's own map.
"""

from __future__ import annotations

import os

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import rules, v2
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup.rules import Rule
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

# include/uapi/linux/bpf.h
BPF_DEVCG_ACC = {"m": 1, "r": 2, "w": 4}
BPF_DEVCG_DEV = {"b": 1, "c": 2}


def test_key_encoding_matches_libvirt():
    assert v2.encode_key(116, 3) == (116 << 32) | 3
    assert v2.encode_key(116, None) == (116 << 32) | 0xFFFFFFFF
    assert v2.encode_key(None, 3) == 0xFFFFFFFF00000003
    assert v2.encode_key(None, None) == 0xFFFFFFFFFFFFFFFF
    for major, minor in [(116, 3), (116, None), (None, 5), (None, None), (0, 0)]:
        assert v2.decode_key(v2.encode_key(major, minor)) == (major, minor)


def test_value_encoding_matches_libvirt():
    # virCgroupV2DevicesGetPerms: (access << 16) | type
    assert v2.encode_value(Rule("c", 116, None, "rw")) == ((2 | 4) << 16) | 2
    assert v2.encode_value(Rule("b", 8, 0, "m")) == (1 << 16) | 1
    assert v2.encode_value(Rule("a", None, None, "rwm")) == (7 << 16) | 3
    assert v2.decode(v2.encode_key(116, None), (6 << 16) | 2) == Rule("c", 116, None, "rw")
    assert v2.decode(v2.encode_key(1, 3), (7 << 16) | 3) == Rule("a", 1, 3, "rwm")


def test_the_map_key_has_no_type_so_c_and_b_merge():
    current = [Rule("c", 8, 0, "r")]
    writes = rules.plan_allow(current, [Rule("b", 8, 0, "r")], v2.v2_key)
    assert rules.after_allow(current, writes, v2.v2_key) == [Rule("a", 8, 0, "r")]


def libvirt_allows(bpf, fd, dtype: str, major: int, minor: int, *, access: str) -> bool:
    """What libvirt's device program decides for one open()/mknod()."""
    want = (sum(BPF_DEVCG_ACC[a] for a in access) << 16) | BPF_DEVCG_DEV[dtype]
    for key in (
        (major << 32) | minor,
        (major << 32) | 0xFFFFFFFF,
        0xFFFFFFFF00000000 | minor,
        0xFFFFFFFFFFFFFFFF,
    ):
        value = bpf.lookup(fd, key)
        if value is not None and (want & value) == want:
            return True
    return False


@pytest.fixture
def libvirt_like_map():
    if os.geteuid() != 0:
        pytest.skip("creating a BPF map needs root")
    bpf = v2.Bpf()
    try:
        fd = bpf.create_hash_map(8)
    except OSError as exc:
        pytest.skip(f"this kernel refuses BPF maps here: {exc}")
    # What libvirt puts in for an LXC guest, in part.
    for rule in (Rule("c", 1, 3, "rwm"), Rule("c", 136, None, "rwm")):
        bpf.update(fd, v2.encode_key(rule.major, rule.minor), v2.encode_value(rule))
    yield bpf, fd
    os.close(fd)


def test_allow_and_deny_in_a_real_map(libvirt_like_map):
    bpf, fd = libvirt_like_map
    dev = v2.V2Devices("/sys/fs/cgroup/machine.slice/x", bpf=bpf, map_fd=fd)
    assert not libvirt_allows(bpf, fd, "c", 116, 7, access="rw")

    dev.allow(Rule("c", 116, None, "rw"))
    assert libvirt_allows(bpf, fd, "c", 116, 7, access="rw")
    assert not libvirt_allows(bpf, fd, "c", 116, 7, access="m")
    assert not libvirt_allows(bpf, fd, "b", 116, 7, access="r")  # the type bit is checked too
    assert set(map(str, dev.read())) == {"c 1:3 rwm", "c 116:* rw", "c 136:* rwm"}

    dev.deny(Rule("c", 116, None, "w"))
    assert libvirt_allows(bpf, fd, "c", 116, 7, access="r")
    assert not libvirt_allows(bpf, fd, "c", 116, 7, access="w")
    dev.deny(Rule("c", 116, None, "rwm"))
    assert not libvirt_allows(bpf, fd, "c", 116, 7, access="r")
    assert set(map(str, dev.read())) == {"c 1:3 rwm", "c 136:* rwm"}
    # libvirt's own entries are untouched.
    assert libvirt_allows(bpf, fd, "c", 136, 4, access="rw")


def test_plan_then_apply_on_a_real_map_is_idempotent(libvirt_like_map):
    bpf, fd = libvirt_like_map
    dev = v2.V2Devices("/x", bpf=bpf, map_fd=fd)
    wanted = [Rule("c", 116, None, "rw"), Rule("c", 226, 0, "rw")]
    writes = rules.plan_allow(dev.read(), wanted, dev.key)
    predicted = rules.after_allow(dev.read(), writes, dev.key)
    for rule in writes:
        dev.allow(rule)
    assert sorted(map(str, dev.read())) == sorted(map(str, predicted))
    assert rules.plan_allow(dev.read(), wanted, dev.key) == []


def test_a_nearly_full_libvirt_map_is_refused(libvirt_like_map):
    bpf, fd = libvirt_like_map  # 8 slots, 2 used
    dev = v2.V2Devices("/x", bpf=bpf, map_fd=fd)
    for minor in range(4):
        dev.allow(Rule("c", 116, minor, "r"))
    with pytest.raises(KioskError, match="nearly full"):
        dev.allow(Rule("c", 116, 9, "r"))
    # Merging into an existing entry needs no slot.
    dev.allow(Rule("c", 116, 0, "w"))


def test_no_device_program_on_a_cgroup_says_so(tmp_path):
    if os.geteuid() != 0 or not os.path.isdir("/sys/fs/cgroup/unified"):
        pytest.skip("needs root and a cgroup2 mount")
    dev = v2.V2Devices("/sys/fs/cgroup/unified", mount="/sys/fs/cgroup/unified")
    with pytest.raises(KioskError, match="no device program is attached"):
        dev.read()
