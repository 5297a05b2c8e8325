"""from_native's completion of libvirt's lxc-tools conversion, without libvirt.

CONVERTED is what libvirt 9.0 here returned from `virsh domxml-from-native
lxc-tools` for CONFIG (captured from the real libvirtd; the integration test
tests/integration/test_adopt.py runs the same conversion for real). The host's
device nodes are stood in for by a stat function: the unit test must not
depend on this machine's /dev.
"""

from __future__ import annotations

import os
import stat

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import persist
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import native, xmldef

CONFIG = """\
# made by lxc-create
lxc.include = /usr/share/lxc/config/common.conf
lxc.arch = amd64
lxc.rootfs.path = dir:/var/lib/lxc/zkfd2/rootfs
lxc.uts.name = zkfd2
lxc.init.cmd = /lib/systemd/systemd --log-level=info
lxc.net.0.type = veth
lxc.net.0.link = lxcbr0
lxc.net.0.flags = up
lxc.net.0.veth.pair = vzkfd2
lxc.mount.entry = /dev/snd dev/snd none bind,create=dir 0 0
lxc.mount.entry = /dev/snd/controlC0 dev/snd/controlC0 none bind,create=file 0 0
lxc.mount.entry = proc proc proc nodev,noexec,nosuid 0 0
lxc.cgroup.devices.deny = a
lxc.cgroup.devices.allow = c 116:* rwm
lxc.cgroup2.devices.allow = c alsa:* rw
lxc.cgroup.devices.allow = x 1:2 rwm
lxc.start.auto = 1
"""

CONVERTED = """<domain type='lxc'>
  <name>zkfd2</name>
  <uuid>6626263c-0581-497a-8154-867c06bde2a6</uuid>
  <memory unit='KiB'>65536</memory>
  <currentMemory unit='KiB'>65536</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os><type arch='x86_64'>exe</type><init>/sbin/init</init></os>
  <features><capabilities policy='allow'/></features>
  <devices>
    <emulator>/usr/lib/libvirt/libvirt_lxc</emulator>
    <filesystem type='mount' accessmode='passthrough'>
      <source dir='dir:/var/lib/lxc/zkfd2/rootfs'/><target dir='/'/>
    </filesystem>
    <filesystem type='block' accessmode='passthrough'>
      <source dev='/dev/snd'/><target dir='/dev/snd'/>
    </filesystem>
    <filesystem type='block' accessmode='passthrough'>
      <source dev='/dev/snd/controlC0'/><target dir='/dev/snd/controlC0'/>
    </filesystem>
    <interface type='bridge'><source bridge='lxcbr0'/><link state='up'/></interface>
  </devices>
</domain>"""


def fake_stat(path):
    mode = stat.S_IFCHR if path == "/dev/snd/controlC0" else stat.S_IFDIR
    return os.stat_result((mode | 0o660, 0, 0, 1, 0, 0, 0, 0, 0, 0))


def fixed(config=CONFIG, converted=CONVERTED, name="player1"):
    root = xmldef.parse(converted)
    report = native.fix_up(name, root, native.parse_lines(config), stat_fn=fake_stat)
    return root, report


def test_parse_lines_keeps_line_numbers_and_skips_comments():
    lines = native.parse_lines("# c\n\nlxc.a = 1\n  lxc.b=x = y  \nbare\n")
    assert lines == [(3, "lxc.a", "1"), (4, "lxc.b", "x = y"), (5, "bare", "")]


def test_mount_entry_targets_become_absolute():
    entry = native.parse_mount_entry("/dev/snd dev/snd none bind,create=dir 0 0")
    assert entry == {"source": "/dev/snd", "target": "/dev/snd", "type": "none", "options": ["bind", "create=dir"]}
    assert native.parse_mount_entry("too short") is None


def test_the_guest_keeps_its_rootfs_and_gets_its_init_and_name():
    root, _report = fixed()
    assert root.findtext("name") == "player1"
    assert root.find("uuid") is None  # an existing guest's UUID is kept by lxc_domain
    rootfs = [fs for fs in root.findall("devices/filesystem") if fs.find("target").get("dir") == "/"]
    assert rootfs[0].find("source").get("dir") == "/var/lib/lxc/zkfd2/rootfs"
    assert root.findtext("os/init") == "/lib/systemd/systemd"
    assert [el.text for el in root.findall("os/initarg")] == ["--log-level=info"]


def test_binds_of_dev_paths_become_what_they_are_on_the_host():
    root, report = fixed()
    snd = [fs for fs in root.findall("devices/filesystem") if fs.find("target").get("dir") == "/dev/snd"]
    assert snd[0].get("type") == "mount"
    assert snd[0].find("source").attrib == {"dir": "/dev/snd"}
    assert not [fs for fs in root.findall("devices/filesystem") if fs.get("type") == "block"]
    hostdevs = root.findall("devices/hostdev")
    assert [(h.get("mode"), h.get("type"), h.findtext("source/char")) for h in hostdevs] == [
        ("capabilities", "misc", "/dev/snd/controlC0")
    ]
    how = {e["line"]: e["as"] for e in report["carried_over"]}
    assert how[11] == "bind mount" and how[12] == "hostdev"


def test_device_allow_lines_become_cgroup_device_rules_and_bad_ones_are_reported():
    root, report = fixed()
    specs, problems = persist.specs_from_domain_xml(xmldef.to_text(root))
    assert [str(s) for s in specs] == ["c 116:* rwm", "c alsa:* rw"]
    assert not problems
    bad = [e for e in report["not_converted"] if e["line"] == 17]
    assert "device type 'x' is unknown" in bad[0]["reason"]


def test_every_line_libvirt_dropped_is_reported_with_a_reason():
    _root, report = fixed()
    dropped = {e["line"]: e["reason"] for e in report["not_converted"]}
    assert sorted(dropped) == [2, 10, 13, 14, 17, 18]
    assert dropped[2].startswith("included files are not read")
    assert dropped[10] == native.DEFAULT_REASON  # lxc.net.0.veth.pair
    assert dropped[13] == "libvirt mounts /proc in every guest itself"
    assert dropped[14].startswith("libvirt starts every guest from deny-all")
    assert dropped[18] == "use lxc_domain's autostart option"


def test_a_console_and_a_usable_memory_size_are_filled_in():
    root, _report = fixed()
    assert root.find("devices/console").get("type") == "pty"
    assert root.findtext("memory") == str(native.NEW_GUEST_MEMORY_KIB)
    limited = CONFIG + "lxc.cgroup.memory.limit_in_bytes = 256M\n"
    root, _report = fixed(limited, CONVERTED.replace("65536", "262144"))
    assert root.findtext("memory") == "262144"


def test_only_a_directory_rootfs_can_be_adopted():
    with pytest.raises(KioskError, match="uses the 'overlay' storage backend"):
        fixed(CONFIG.replace("dir:/var", "overlay:/var"), CONVERTED.replace("dir:/var", "overlay:/var"))


def test_config_path_errors_name_the_option(tmp_path):
    with pytest.raises(KioskError, match=r"^Guest 'g': from_native 'rel/config' must be an absolute path$"):
        native.read_config("g", "rel/config")
    with pytest.raises(KioskError, match="cannot be read: No such file or directory"):
        native.read_config("g", str(tmp_path / "missing"))


def test_a_config_without_a_rootfs_is_refused_before_libvirt_is_asked(tmp_path):
    config = tmp_path / "config"
    config.write_text("lxc.uts.name = x\n")
    with pytest.raises(KioskError, match=r"has no lxc\.rootfs\.path"):
        native.convert(None, "g", str(config))
