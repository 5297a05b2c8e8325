"""lxc_domain's option checks and the dnsmasq lease reader, without libvirt."""

from __future__ import annotations

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import spec as speclib
from ansible_collections.kiosk.lxc.plugins.module_utils.domain.info import read_leases

BAD = [
    ({"name": "a/b"}, r"^Guest name 'a/b' is invalid"),
    ({"name": "x" * 65}, r"is invalid: use letters, digits"),
    ({"state": "gone"}, r"^Guest 'g1': state 'gone' is not one of present, running"),
    ({"capabilities": {"add": ["sys_fly"]}}, r"capabilities.add has an unknown capability 'sys_fly'"),
    ({"capabilities": {"add": ["chown"], "drop": ["chown"]}}, r"add and drop both name chown"),
    ({"rootfs": "/nonexistent/kiosk"}, r"^Guest 'g1': rootfs /nonexistent/kiosk does not exist$"),
    ({"rootfs": "rel/root"}, r"rootfs 'rel/root' must be an absolute path"),
    ({"filesystems": [{"source": "/srv", "target": "mnt"}]}, r"filesystems\[0\].target 'mnt'"),
    ({"filesystems": [{"type": "ram", "target": "/run"}]}, r"filesystems\[0\].size is required"),
    ({"xml": "<domain type='lxc'><name>g1</name>"}, r"^Guest 'g1': xml is not well-formed XML"),
    ({"xml": "<domain type='kvm'/>"}, r"xml is a domain of type 'kvm', not 'lxc'"),
    ({"xml": "<domain type='lxc'><name>other</name></domain>"}, r"names the guest 'other'"),
    ({"xml": "<domain type='lxc'/>", "memory": 64}, r"xml cannot be combined with memory"),
    ({"interfaces": [{"bridge": "br0", "mac": "52:54:00:zz:00:01"}]}, r"interfaces\[0\].mac"),
    ({"interfaces": [{"bridge": "br0", "mac": "01:00:5e:00:00:01"}]}, r"is a multicast address"),
    ({"interfaces": [{"bridge": "br0", "network": "default"}]}, r"exactly one of bridge and network"),
    ({"memory": "512MB"}, r"memory '512MB' has an unknown unit 'MB' \(use KiB, MiB or GiB\)"),
    ({"memory": "lots"}, r"memory 'lots' is not a size"),
    ({"memory": 0}, r"memory must be greater than zero"),
    ({"vcpu": 0}, r"vcpu must be a whole number >= 1"),
    ({"hostdevs": ["snd/controlC0"]}, r"hostdevs\[0\] 'snd/controlC0' must be an absolute path"),
    ({"idmap": {"uid": {"start": 0, "target": 1, "count": 1}}}, r"idmap.gid is required"),
    ({"metadata": {"k": {"nested": 1}}}, r"metadata.k must be a string or a number"),
    ({"restart": "always"}, r"restart 'always' is not one of on_change, never"),
]


@pytest.mark.parametrize(("options", "message"), BAD)
def test_bad_input_is_refused_with_one_sentence(options, message):
    with pytest.raises(KioskError, match=message) as err:
        speclib.validate({"name": "g1", **options})
    assert "\n" not in err.value.msg


def test_memory_forms():
    assert speclib.parse_memory("g", "memory", 512) == 512 * 1024
    assert speclib.parse_memory("g", "memory", "1GiB") == 1024 * 1024
    assert speclib.parse_memory("g", "memory", "64 mib") == 64 * 1024
    assert speclib.parse_memory("g", "memory", "65536KiB") == 65536
    assert speclib.parse_memory("g", "memory", "256") == 256 * 1024


def test_good_options_come_out_canonical(tmp_path):
    spec = speclib.validate(
        {
            "name": "player-1.a_b",
            "rootfs": str(tmp_path),
            "capabilities": {"add": ["CAP_SYS_NICE", "sys_nice"]},
            "interfaces": [{"bridge": "br0", "mac": "52:54:00:AB:CD:EF"}],
            "metadata": {"n": 3, "on": True},
            "idmap": {},
        }
    )
    assert spec.capabilities == {"policy": "default", "add": ["sys_nice"], "drop": []}
    assert spec.interfaces[0]["mac"] == "52:54:00:ab:cd:ef"
    assert spec.metadata == {"n": "3", "on": "true"}
    assert spec.idmap == {}
    assert spec.memory_kib is None  # omitted: left as it is


def test_rootfs_is_not_checked_on_a_remote_uri():
    spec = speclib.validate({"name": "g1", "rootfs": "/nonexistent/x", "uri": "lxc+ssh://h/system"})
    assert spec.rootfs == "/nonexistent/x"


def test_read_leases(tmp_path):
    leases = tmp_path / "br0.leases"
    leases.write_text(
        "1700000100 52:54:00:aa:bb:cc 10.0.0.5 player1 01:52:54:00:aa:bb:cc\n"
        "0 52:54:00:AA:BB:DD 10.0.0.6 * *\n"
        "1600000000 52:54:00:aa:bb:ee 10.0.0.7 old *\n"
        "duid 00:01:00:01:2c:aa:bb:cc\n"
    )
    assert read_leases(str(leases), now=1700000000) == {
        "52:54:00:aa:bb:cc": ["10.0.0.5"],
        "52:54:00:aa:bb:dd": ["10.0.0.6"],
    }
    assert read_leases(str(tmp_path / "missing.leases")) == {}
