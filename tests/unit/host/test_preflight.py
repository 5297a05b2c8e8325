"""Preflight and libvirtd start logic, from recorded /proc contents (no root needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.host import libvirtd, preflight

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
40 31 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""
PURE_V2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
V1_NO_DEVICES = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
DEVICES = (Path(__file__).resolve().parents[2] / "fixtures" / "proc" / "devices").read_text(encoding="utf-8")


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    ("mountinfo", "version", "device_control", "kind"),
    [
        (HYBRID, "hybrid", True, "devices.allow"),
        (PURE_V2, "v2", True, "bpf"),
        (V1_NO_DEVICES, "v1", False, None),
    ],
)
def test_cgroup_layout(tmp_path, mountinfo, version, device_control, kind):
    cg = preflight.read_cgroup(write(tmp_path, "mountinfo", mountinfo))
    assert (cg["version"], cg["device_control"], cg["device_control_kind"]) == (version, device_control, kind)


def test_majors_are_read_from_character_devices_only(tmp_path):
    (tmp_path / "devices").write_text(DEVICES)
    assert preflight.read_majors(str(tmp_path)) == {"alsa": 116, "drm": 226, "input": 13}
    (tmp_path / "devices").write_text("Character devices:\n 13 input\n")
    assert preflight.read_majors(str(tmp_path))["alsa"] is None


def facts(**over):
    base = {
        "namespaces": dict.fromkeys(("mnt", "uts", "ipc", "pid", "net", "user", "cgroup"), True),
        "user_namespaces": True,
        "cgroup": {"version": "v2", "device_control": True},
        "majors": {"alsa": 116, "drm": None, "input": 13},
        "libvirt_lxc_driver": True,
    }
    base.update(over)
    return base


def test_a_good_host_has_no_problems():
    assert preflight.problems(facts()) == ([], [])


def test_problems_name_what_is_missing():
    ns = dict.fromkeys(("mnt", "uts", "ipc", "pid", "net", "user", "cgroup"), True) | {"pid": False}
    fatal, warn = preflight.problems(
        facts(
            namespaces=ns,
            cgroup={"version": "v1", "device_control": False},
            libvirt_lxc_driver=False,
            majors={"alsa": None},
            user_namespaces=False,
        )
    )
    assert len(fatal) == 3
    assert "pid" in fatal[0]
    assert "device controller" in fatal[1]
    assert "libvirt-daemon-driver-lxc" in fatal[2]
    assert any("User namespaces" in w for w in warn)
    assert any("ALSA" in w for w in warn)


def test_libvirtd_runs_in_a_private_mount_namespace_only_on_hybrid_hosts(tmp_path, monkeypatch):
    monkeypatch.setattr(libvirtd.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    argv = libvirtd.libvirtd_argv(True, write(tmp_path, "hybrid", HYBRID))
    assert argv[:4] == ["unshare", "-m", "--propagation", "private"]
    assert argv[-1] == "umount /sys/fs/cgroup/unified && exec libvirtd -d"
    assert libvirtd.libvirtd_argv(True, write(tmp_path, "v2", PURE_V2)) == ["libvirtd", "-d"]
    assert libvirtd.libvirtd_argv(False, write(tmp_path, "v1", V1_NO_DEVICES)) == ["libvirtd"]


def test_libvirtd_missing_binary_is_one_clear_sentence(monkeypatch):
    monkeypatch.setattr(libvirtd.shutil, "which", lambda tool: None if tool == "libvirtd" else "/x")
    with pytest.raises(KioskError, match="libvirtd is not installed"):
        libvirtd.libvirtd_argv(True)


def test_ensure_started_does_nothing_when_libvirtd_answers():
    ran = []
    result = libvirtd.ensure_started("lxc:///system", 1, False, lambda uri: True, ran.append)
    assert result == {"changed": False, "actions": [], "how": "already running"}
    assert ran == []


def test_ensure_started_reports_a_daemon_that_never_answers(monkeypatch):
    """A fake command runner: starting a real second libvirtd here would disturb the one the suite uses."""
    monkeypatch.setattr(libvirtd.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    monkeypatch.setattr(preflight, "systemd_running", lambda: False)
    monkeypatch.setattr(libvirtd, "prepare_runtime_dirs", lambda: None)
    ran = []
    check = libvirtd.ensure_started("lxc:///system", 0.3, True, lambda uri: False, ran.append)
    assert check["changed"] is True
    assert ran == []
    with pytest.raises(KioskError, match="does not answer on lxc:///system"):
        libvirtd.ensure_started("lxc:///system", 0.3, False, lambda uri: False, ran.append)
    assert [" ".join(a) for a in ran] == check["actions"]


def test_a_missing_lxc_driver_the_caller_installs_next_is_no_problem():
    no_driver = facts(libvirt_lxc_driver=False)
    assert any("libvirt-daemon-driver-lxc" in p for p in preflight.problems(no_driver)[0])
    assert preflight.problems(no_driver, installing=["procps", "libvirt-daemon-driver-lxc"]) == ([], [])
    assert preflight.problems(no_driver, installing=["procps"])[0]


def test_gather_lists_the_installed_packages(tmp_path):
    status = tmp_path / "status"
    status.write_text("Package: b\nStatus: install ok installed\n\nPackage: a\nStatus: install ok installed\n")
    assert preflight.gather(dpkg_status=str(status))["packages"] == ["a", "b"]


def test_systemd_runs_when_its_runtime_directory_exists(tmp_path):
    assert preflight.systemd_running(str(tmp_path)) is False
    (tmp_path / "systemd" / "system").mkdir(parents=True)
    assert preflight.systemd_running(str(tmp_path)) is True
    assert preflight.gather(run_dir=str(tmp_path))["systemd"] is True


def test_whether_systemd_runs_is_known_in_one_place():
    """#17: host facts come from host_info's code; no other module probes /run/systemd/system itself."""
    probe = re.compile(r"""/run/systemd/system|["']systemd["'],\s*["']system["']""")
    plugins = Path(__file__).resolve().parents[3] / "plugins"
    others = [
        f"{path.relative_to(plugins)}:{n}"
        for path in sorted(plugins.rglob("*.py"))
        if path.name != "preflight.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if probe.search(line) and not line.lstrip().startswith(("#", "C(", "-"))
    ]
    assert others == []
