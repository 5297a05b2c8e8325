"""kiosk.lxc.cgroup_device state=hook: the host role installs the libvirt hook before any guest has rules.

The install, check mode and reload logic run for real against temporary hook
and library directories. The libvirtd they would reload is a stand-in process
(a real unix socket where libvirtd's would be, a pid file, a SIGHUP counter):
the machine's shared libvirtd must never be reloaded by a test. The last tests
run the module through Ansible on the real /etc/libvirt/hooks and
/usr/local/lib/kiosk-lxc, and put back what they found there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import device, hook
from ansible_collections.kiosk.lxc.plugins.module_utils.common import shipped
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from play import run_module

STANDIN = """
import signal, socket, sys, time
sock = socket.socket(socket.AF_UNIX); sock.bind(sys.argv[1]); sock.listen(8)
signal.signal(signal.SIGHUP, lambda *_: open(sys.argv[2], "a").write("HUP\\n"))
open(sys.argv[3], "w").write("ready")
while True:
    time.sleep(1)
"""


@pytest.fixture
def host(tmp_path):
    return device.Host(
        hook_dir=str(tmp_path / "hooks"),
        lib_dir=str(tmp_path / "lib"),
        python=sys.executable,
        pidfiles=(str(tmp_path / "libvirtd.pid"),),
        libvirt_socket=str(tmp_path / "libvirt-sock"),
    )


@pytest.fixture
def libvirtd_standin(tmp_path, host):
    """A process that answers on host.libvirt_socket and counts SIGHUPs; its pid in host.pidfiles[0]."""
    hups, ready = tmp_path / "hups", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", STANDIN, host.libvirt_socket, str(hups), str(ready)])
    Path(host.pidfiles[0]).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 10
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield lambda: hups.read_text().count("HUP") if hups.exists() else 0
    proc.kill()
    proc.wait()


@pytest.fixture
def machine_hook_kept(tmp_path):
    """This machine's real hook script and kiosk-lxc library as they were, put back after the test."""
    real, lib, saved = Path(device.hook_path(device.Host())), Path(shipped.LIB_ROOT), tmp_path / "saved"
    had = sorted(os.listdir(lib)) if lib.is_dir() else None
    if had is not None:
        shutil.copytree(lib, saved / "lib", symlinks=True)
    if real.exists():
        shutil.copy2(real, saved / "script")
    yield
    if (saved / "script").exists():
        shutil.copy2(saved / "script", real)
    elif real.exists():
        real.unlink()
    for name in os.listdir(lib) if lib.is_dir() else []:
        if had is None or name not in had:
            shutil.rmtree(lib / name)
    for name in had or []:
        if not (lib / name).exists():
            shutil.copytree(saved / "lib" / name, lib / name, symlinks=True)
    if had is None and lib.is_dir():
        lib.rmdir()


def script(host) -> Path:
    return Path(host.hook_dir, "lxc.d", hook.HOOK_NAME)


def test_check_mode_then_install_then_nothing_to_do(host):
    tree = shipped.plan_tree(host.lib_dir, "hook", shipped.tree(hook.__name__))
    check = device.run_hook(True, host)
    assert check["changed"] is True
    assert check["actions"] == [f"install {tree.path}", f"install {script(host)}"], "libvirtd is not running"
    assert not Path(host.hook_dir).exists() and not Path(host.lib_dir).exists(), "check mode wrote something"
    real = device.run_hook(False, host)
    assert real["actions"] == check["actions"]
    for rel, content in tree.files.items():
        assert Path(tree.path, rel).read_text(encoding="utf-8") == content
    assert script(host).read_text(encoding="utf-8") == device.hook_script(host.python, tree.path)
    assert script(host).stat().st_mode & 0o777 == 0o755
    # The installed hook runs on its own, from the copied library, as libvirt runs it.
    ran = subprocess.run(
        [str(script(host)), "player1", "stopped", "end", "-"],
        input="<domain/>",
        capture_output=True,
        text=True,
        check=False,
    )
    assert (ran.returncode, ran.stderr) == (0, "")
    assert device.run_hook(False, host)["changed"] is False
    assert device.run_hook(True, host)["changed"] is False


def test_a_running_libvirtd_is_reloaded_once_when_the_hook_is_new(host, libvirtd_standin):
    check = device.run_hook(True, host)
    assert check["actions"][-1] == "reload libvirtd (SIGHUP) so that it runs the new hook"
    assert libvirtd_standin() == 0
    real = device.run_hook(False, host)
    assert real["actions"] == check["actions"]
    deadline = time.monotonic() + 5
    while libvirtd_standin() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert libvirtd_standin() == 1
    # An outdated hook is rewritten; libvirtd already knows the script, so no second reload.
    script(host).write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    again = device.run_hook(False, host)
    assert again["actions"] == [f"install {script(host)}"]
    time.sleep(0.3)
    assert libvirtd_standin() == 1
    assert device.run_hook(False, host)["changed"] is False


def test_hook_state_takes_no_target_or_rules(host):
    for extra in ({"domain": "player1"}, {"rules": ["c 116:* rw"]}, {"persistent": True}):
        with pytest.raises(KioskError, match="state: hook installs only the libvirt hook"):
            device.run({"state": "hook"} | extra, None, False, host)
    assert not Path(host.hook_dir).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="writes /etc/libvirt/hooks: needs root")
def test_module_installs_the_real_hook_idempotently(machine_hook_kept):
    """Through Ansible: AnsiballZ packs hook.py's closure and the module reads it from the payload."""
    first = run_module("kiosk.lxc.cgroup_device", {"state": "hook"}, diff=True)
    assert first["_status"] in ("ok", "changed"), first.get("msg", first["_stdout"])
    real = script(device.Host())
    tree = shipped.plan_tree(shipped.LIB_ROOT, "hook", shipped.tree(hook.__name__))
    assert real.read_text(encoding="utf-8") == device.hook_script("/usr/bin/python3", tree.path)
    assert tree.write is None, "the payload's sources differ from this checkout's"
    assert run_module("kiosk.lxc.cgroup_device", {"state": "hook"}, check=True)["_status"] == "ok"
    second = run_module("kiosk.lxc.cgroup_device", {"state": "hook"})
    assert (second["_status"], second["actions"]) == ("ok", [])


@pytest.mark.skipif(os.geteuid() != 0, reason="runs modules as root")
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"state": "hook", "rules": ["c 116:* rw"]}, "state: hook installs only the libvirt hook"),
        ({"domain": "player1"}, "state is present but all of the following are missing: rules"),
        ({"rules": ["c 116:* rw"]}, "state is present but any of the following are missing: domain, machine"),
    ],
)
def test_module_bad_input(args, fragment):
    res = run_module("kiosk.lxc.cgroup_device", args)
    assert res["_status"] == "failed"
    assert fragment in res["msg"]
