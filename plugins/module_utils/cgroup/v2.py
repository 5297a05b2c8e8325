# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cgroup v2 device access: entries in libvirt's own BPF map.

On cgroup v2 there is no devices.allow: access is decided by a
BPF_PROG_TYPE_CGROUP_DEVICE program attached to the cgroup. For a libvirt
guest that program is libvirt's (src/util/vircgroupv2devices.c); it looks the
device up in a BPF hash map, trying four keys in turn:

    (major << 32) | minor, (major << 32) | 0xffffffff,
    0xffffffff00000000 | minor, 0xffffffffffffffff

and allows the access when `(ctx->access_type & value) == ctx->access_type`,
where value = (access << 16) | type with access bits m=1, r=2, w=4 and type
bits block=1, char=2. The map's key has no device type: an entry for c and b
on the same numbers is one entry with both type bits.

We add to and remove from that map, and never attach a program of our own:
a second program in the cgroup would be run in addition to libvirt's (both
must allow), and replacing libvirt's would take away its rules. libvirt's
other mechanism, `<hostdev mode='capabilities' type='misc'>`, needs one
device node path per entry and cannot express `116:*`, and it changes the
domain definition, which belongs to lxc_domain. The cost: libvirt counts the
entries it made itself and grows the map only when its count reaches the
map's size, so we refuse to fill the map's last free slots (FREE_SLOTS) and
fail with a message pointing to <hostdev> instead.

libvirt's guests on this project's CI host are in the cgroup v1 devices
controller, so libvirt's program is never attached there. The encoding and
the map edits are unit-tested against a real BPF hash map, and
tests/integration/test_cgroup_device_v2_bpf.py attaches a stand-in program
that does libvirt's lookups to a cgroup on the host's cgroup2 mount and
checks open() from inside it (EPERM -> ENXIO -> EPERM). The kiosk VM scenario
(cgroup v2) runs it against libvirt's own map.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup.rules import Rule, norm_access
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

WILDCARD = 0xFFFFFFFF
ACC_BITS = {"m": 1, "r": 2, "w": 4}
TYPE_BITS = {"b": 1, "c": 2}
FREE_SLOTS = 2

# bpf(2) commands, attach type and map type (include/uapi/linux/bpf.h).
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_GET_FD_BY_ID = 13
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
BPF_CGROUP_DEVICE = 6
BPF_MAP_TYPE_HASH = 1
SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "armv7l": 386, "i686": 357, "ppc64le": 361, "s390x": 351}
ATTR_SIZE = 128


def encode_key(major: int | None, minor: int | None) -> int:
    return ((WILDCARD if major is None else major) << 32) | (WILDCARD if minor is None else minor)


def decode_key(key: int) -> tuple[int | None, int | None]:
    major, minor = key >> 32, key & WILDCARD
    return (None if major == WILDCARD else major, None if minor == WILDCARD else minor)


def encode_value(rule: Rule) -> int:
    types = sum(TYPE_BITS.values()) if rule.type == "a" else TYPE_BITS[rule.type]
    return (sum(ACC_BITS[ch] for ch in rule.access) << 16) | types


def decode(key: int, value: int) -> Rule:
    major, minor = decode_key(key)
    types = value & 0xFFFF
    dtype = {1: "b", 2: "c"}.get(types, "a")
    access = norm_access("".join(ch for ch, bit in ACC_BITS.items() if (value >> 16) & bit))
    return Rule(dtype, major, minor, access)


def v2_key(rule: Rule):
    """Two rules are one map entry when their numbers match, whatever their type."""
    return (rule.major, rule.minor)


class Bpf:
    """The few bpf(2) calls needed here, through libc's syscall()."""

    def __init__(self):
        number = SYS_BPF.get(platform.machine())
        if number is None:
            raise KioskError(f"cgroup v2 device rules: bpf(2) is not known on {platform.machine()}")
        self._nr = number
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long

    def call(self, cmd: int, attr: ctypes.Array) -> int:
        ret = self._libc.syscall(self._nr, cmd, ctypes.byref(attr), ctypes.c_uint(ctypes.sizeof(attr)))
        if ret < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return ret

    @staticmethod
    def attr(*fields: tuple[int, str, int]) -> ctypes.Array:
        buf = ctypes.create_string_buffer(ATTR_SIZE)
        for offset, fmt, value in fields:
            struct.pack_into(fmt, buf, offset, value)
        return buf

    def create_hash_map(self, max_entries: int) -> int:
        """A map shaped like libvirt's (u64 -> u32 hash); used by tests."""
        return self.call(
            BPF_MAP_CREATE, self.attr((0, "I", BPF_MAP_TYPE_HASH), (4, "I", 8), (8, "I", 4), (12, "I", max_entries))
        )

    def _elem(self, cmd: int, fd: int, key: int, value=None, flags: int = 0) -> ctypes.Array:
        k = ctypes.c_uint64(key)
        v = value if value is not None else ctypes.c_uint32(0)
        attr = self.attr((0, "I", fd), (8, "Q", ctypes.addressof(k)), (16, "Q", ctypes.addressof(v)), (24, "Q", flags))
        self.call(cmd, attr)
        return v

    def lookup(self, fd: int, key: int) -> int | None:
        try:
            return self._elem(BPF_MAP_LOOKUP_ELEM, fd, key).value
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    def update(self, fd: int, key: int, value: int) -> None:
        self._elem(BPF_MAP_UPDATE_ELEM, fd, key, ctypes.c_uint32(value))

    def delete(self, fd: int, key: int) -> None:
        k = ctypes.c_uint64(key)
        self.call(BPF_MAP_DELETE_ELEM, self.attr((0, "I", fd), (8, "Q", ctypes.addressof(k))))

    def keys(self, fd: int) -> list[int]:
        found = []
        prev = None
        while True:
            nxt = ctypes.c_uint64(0)
            k = ctypes.c_uint64(prev or 0)
            attr = self.attr(
                (0, "I", fd), (8, "Q", 0 if prev is None else ctypes.addressof(k)), (16, "Q", ctypes.addressof(nxt))
            )
            try:
                self.call(BPF_MAP_GET_NEXT_KEY, attr)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return found
                raise
            found.append(nxt.value)
            prev = nxt.value

    def attached_programs(self, cgroup_fd: int) -> list[int]:
        ids = (ctypes.c_uint32 * 16)()
        attr = self.attr(
            (0, "I", cgroup_fd), (4, "I", BPF_CGROUP_DEVICE), (16, "Q", ctypes.addressof(ids)), (24, "I", 16)
        )
        self.call(BPF_PROG_QUERY, attr)
        count = struct.unpack_from("I", attr, 24)[0]
        return list(ids[: min(count, 16)])

    def prog_map_ids(self, prog_id: int) -> list[int]:
        fd = self.call(BPF_PROG_GET_FD_BY_ID, self.attr((0, "I", prog_id)))
        try:
            map_ids = (ctypes.c_uint32 * 8)()
            info = ctypes.create_string_buffer(128)
            struct.pack_into("I", info, 52, 8)  # nr_map_ids: room for 8
            struct.pack_into("Q", info, 56, ctypes.addressof(map_ids))
            self.call(BPF_OBJ_GET_INFO_BY_FD, self.attr((0, "I", fd), (4, "I", 128), (8, "Q", ctypes.addressof(info))))
            count = struct.unpack_from("I", info, 52)[0]
            return list(map_ids[: min(count, 8)])
        finally:
            os.close(fd)

    def map_fd(self, map_id: int) -> int:
        return self.call(BPF_MAP_GET_FD_BY_ID, self.attr((0, "I", map_id)))

    def map_shape(self, fd: int) -> tuple[int, int, int, int]:
        """(map type, key size, value size, max entries)."""
        info = ctypes.create_string_buffer(64)
        self.call(BPF_OBJ_GET_INFO_BY_FD, self.attr((0, "I", fd), (4, "I", 64), (8, "Q", ctypes.addressof(info))))
        mtype, _id, ksize, vsize, max_entries = struct.unpack_from("5I", info, 0)
        return mtype, ksize, vsize, max_entries


class V2Devices:
    """The device rules in libvirt's BPF map for one cgroup v2 directory.

    The map is found from the program attached to the cgroup (or to the
    nearest parent that has one, under the cgroup2 mount). `map_fd` lets a
    test hand in a map it created itself.
    """

    version = "v2"
    key = staticmethod(v2_key)

    def __init__(self, path: str, mount: str = "/sys/fs/cgroup", bpf: Bpf | None = None, map_fd: int | None = None):
        self.path = path
        self.mount = mount.rstrip("/") or "/"
        self.bpf = bpf or Bpf()
        self._fd = map_fd
        self._owned = map_fd is None

    def _map(self) -> int:
        if self._fd is not None:
            return self._fd
        here = self.path
        while True:
            progs = self._programs(here)
            if progs:
                break
            if os.path.normpath(here) == os.path.normpath(self.mount):
                raise KioskError(f"cgroup {self.path}: no device program is attached (is it libvirt's guest?)")
            here = os.path.dirname(here)
        if len(progs) != 1:
            raise KioskError(f"cgroup {here}: {len(progs)} device programs are attached; expected libvirt's only")
        map_ids = self.bpf.prog_map_ids(progs[0])
        if len(map_ids) != 1:
            raise KioskError(f"cgroup {here}: the device program uses {len(map_ids)} maps; it is not libvirt's")
        fd = self.bpf.map_fd(map_ids[0])
        mtype, ksize, vsize, _max = self.bpf.map_shape(fd)
        if (mtype, ksize, vsize) != (BPF_MAP_TYPE_HASH, 8, 4):
            os.close(fd)
            raise KioskError(f"cgroup {here}: the device program's map is not libvirt's (u64 -> u32 hash)")
        self._fd = fd
        return fd

    def _programs(self, path: str) -> list[int]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise KioskError(f"cgroup {path}: cannot open it: {exc.strerror}") from exc
        try:
            return self.bpf.attached_programs(fd)
        except OSError as exc:
            raise KioskError(f"cgroup {path}: querying its device programs failed: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def read(self) -> list[Rule]:
        fd = self._map()
        rules = []
        for key in self.bpf.keys(fd):
            value = self.bpf.lookup(fd, key)
            if value is not None:
                rules.append(decode(key, value))
        return rules

    def allow(self, rule: Rule) -> None:
        fd = self._map()
        key = encode_key(rule.major, rule.minor)
        old = self.bpf.lookup(fd, key)
        if old is None:
            max_entries = self.bpf.map_shape(fd)[3]
            if len(self.bpf.keys(fd)) + FREE_SLOTS >= max_entries:
                raise KioskError(
                    f"cgroup {self.path}: libvirt's device map is nearly full ({max_entries} entries); "
                    "give the guest <hostdev mode='capabilities' type='misc'> devices instead"
                )
        try:
            self.bpf.update(fd, key, (old or 0) | encode_value(rule))
        except OSError as exc:
            raise KioskError(
                f"cgroup {self.path}: adding '{rule}' to libvirt's device map failed: {exc.strerror}"
            ) from exc

    def deny(self, rule: Rule) -> None:
        fd = self._map()
        key = encode_key(rule.major, rule.minor)
        old = self.bpf.lookup(fd, key)
        if old is None:
            return
        access = ((old >> 16) & ~(encode_value(rule) >> 16)) & 0xFFFF
        try:
            if access:
                self.bpf.update(fd, key, (access << 16) | (old & 0xFFFF))
            else:
                self.bpf.delete(fd, key)
        except OSError as exc:
            raise KioskError(
                f"cgroup {self.path}: removing '{rule}' from libvirt's device map failed: {exc.strerror}"
            ) from exc

    def close(self) -> None:
        if self._fd is not None and self._owned:
            os.close(self._fd)
            self._fd = None
