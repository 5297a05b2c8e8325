"""kiosk.lxc.hotplug_agent: the agent installed, started, restarted on change and removed, for real.

The install runs against a temporary prefix (lib dir, start script, pid file)
so this shared machine's /usr/local and /run stay as they are; the agent
it starts is the real one, on /usr/bin/python3, connected to the real
libvirtd. This machine has no sound card, so the running agent finds
nothing to hand out. No systemd runs here: the daemon path is what runs;
the unit text is checked as text. The module itself runs through
ansible-playbook in check mode (it would write to /usr/local otherwise).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import play
import pytest
from agent_host import agent_host, hook_host
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import device
from ansible_collections.kiosk.lxc.plugins.module_utils.common import shipped
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug import install
from old_layout import install_old_agent, install_old_hook, old_collection

PARAMS = {"uri": "lxc:///system", "state": "present", "rescan": 5.0, "log_file": None, "python": "/usr/bin/python3"}


@pytest.fixture
def host(tmp_path):
    h = agent_host(tmp_path, systemd=False)
    yield h
    pid = install.daemon_pid(h)
    if pid is not None:
        os.kill(pid, 15)


def wait_log(path, text, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return True
        time.sleep(0.05)
    return False


def test_present_check_real_check_real_then_change_then_absent(host, tmp_path):
    params = dict(PARAMS, log_file=str(tmp_path / "log" / "hotplug.log"))
    checked = install.run(params, True, host)
    assert checked["changed"] and checked["actions"][-1] == "start kiosk-lxc-hotplug"
    assert not os.path.exists(host.script) and install.daemon_pid(host) is None

    real = install.run(params, False, host)
    assert real["actions"] == checked["actions"] and real["running"]
    pid = install.daemon_pid(host)
    assert pid is not None
    assert wait_log(tmp_path / "log" / "hotplug.log", "started: watching sound cards")
    assert install.run(params, True, host)["changed"] is False
    assert install.run(params, False, host)["changed"] is False
    assert install.daemon_pid(host) == pid

    changed = install.run(dict(params, rescan=2.0), False, host)
    assert changed["actions"] == [f"install {host.script}", "restart kiosk-lxc-hotplug"]
    new_pid = install.daemon_pid(host)
    assert new_pid not in (None, pid) and not install.alive(pid)
    assert "'--rescan', '2.0'" in Path(host.script).read_text()

    absent = dict(params, state="absent")
    gone = install.run(absent, False, host)
    assert gone["changed"] and "stop kiosk-lxc-hotplug" in gone["actions"]
    assert not install.alive(new_pid) and not os.path.exists(host.script)
    assert shipped.installed(host.lib_dir, "agent") == []
    assert install.run(absent, False, host)["changed"] is False


def test_a_dead_agent_is_started_again(host, tmp_path):
    params = dict(PARAMS, log_file=str(tmp_path / "hotplug.log"))
    install.run(params, False, host)
    pid = install.daemon_pid(host)
    os.kill(pid, 9)
    while install.alive(pid):
        time.sleep(0.02)
    again = install.run(params, False, host)
    assert again["actions"] == ["start kiosk-lxc-hotplug"]
    assert install.daemon_pid(host) not in (None, pid)


def test_installing_or_upgrading_the_hook_never_restarts_the_agent(host, tmp_path):
    """Seen before the agent had a directory of its own: the hook task rewrote the device cgroup modules both
    ran from, so the agent was older than its files and the next run restarted it for the hook's sake."""
    params = dict(PARAMS, log_file=str(tmp_path / "hotplug.log"))
    install.run(params, False, host)
    pid = install.daemon_pid(host)
    assert wait_log(tmp_path / "hotplug.log", "started: watching sound cards")
    hooks = hook_host(tmp_path)
    assert device.run_hook(False, hooks)["changed"]
    Path(device.hook_path(hooks)).write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")  # an older hook
    assert device.run_hook(False, hooks)["actions"] == [f"install {device.hook_path(hooks)}"]
    assert install.run(params, True, host)["changed"] is False
    assert install.run(params, False, host)["changed"] is False
    assert install.daemon_pid(host) == pid


def test_an_agent_older_than_its_own_files_is_restarted(host, tmp_path):
    """A run that wrote the agent's files and then failed before the restart: the next run finds every file
    as it wants it, and restarts the agent because it started before them."""
    params = dict(PARAMS, log_file=str(tmp_path / "hotplug.log"))
    install.run(params, False, host)
    pid = install.daemon_pid(host)
    assert wait_log(tmp_path / "hotplug.log", "started: watching sound cards")
    own = os.path.join(install.plan_tree(host).path, shipped.relpath(f"{shipped.PACKAGE}.cgroup.rules"))
    time.sleep(0.05)
    os.utime(own)  # written again, same content, after the agent started

    checked = install.run(params, True, host)
    assert checked["actions"] == ["restart kiosk-lxc-hotplug"]
    assert f"changed since the agent started: {own}" in checked["diff"]["before"]
    assert install.daemon_pid(host) == pid
    again = install.run(params, False, host)
    assert again["actions"] == ["restart kiosk-lxc-hotplug"]
    assert install.daemon_pid(host) not in (None, pid) and not install.alive(pid)
    assert install.run(params, False, host)["changed"] is False  # the new agent is younger than its files


def test_a_kiosk_installed_by_the_previous_layout_upgrades_cleanly(host, tmp_path):
    """BASE's own installers (from git) put the hook and a running agent in the shared <lib>/python; today's
    hook run moves the hook out without restarting the agent, today's agent run moves the agent out,
    restarts it on its new code and removes the shared library; a second run changes nothing."""
    params = dict(PARAMS, log_file=str(tmp_path / "hotplug.log"))
    old = old_collection(tmp_path)
    hooks = hook_host(tmp_path)
    install_old_hook(old, hooks.hook_dir, hooks.lib_dir, hooks.python)
    install_old_agent(old, host, params, start=True)
    old_pid = install.daemon_pid(host)
    legacy = os.path.join(host.lib_dir, shipped.LEGACY)
    assert old_pid is not None and os.path.isdir(legacy)
    assert wait_log(tmp_path / "hotplug.log", "started: watching sound cards")

    assert device.run_hook(False, hooks)["changed"] and os.path.isdir(legacy)
    assert install.daemon_pid(host) == old_pid

    tree = install.plan_tree(host)
    checked = install.run(params, True, host)
    assert checked["actions"] == [
        f"install {tree.path}",
        f"install {host.script}",
        "restart kiosk-lxc-hotplug",
        f"remove {legacy}",
    ]
    assert install.daemon_pid(host) == old_pid and os.path.isdir(legacy)
    real = install.run(params, False, host)
    assert real["actions"] == checked["actions"]
    new_pid = install.daemon_pid(host)
    assert new_pid not in (None, old_pid) and not install.alive(old_pid)
    assert not os.path.exists(legacy)
    assert sorted(os.listdir(host.lib_dir)) == sorted(
        [os.path.basename(tree.path), os.path.basename(shipped.installed(host.lib_dir, "hook")[0])]
    )
    with open(f"/proc/{new_pid}/cmdline", "rb") as fh:
        assert host.script.encode() in fh.read()
    assert install.run(params, True, host)["changed"] is False
    assert install.run(params, False, host)["changed"] is False
    assert device.run_hook(False, hooks)["changed"] is False
    assert install.daemon_pid(host) == new_pid


def test_unit_text_and_bad_input():
    text = install.unit_text("/usr/local/sbin/kiosk-lxc-hotplug")
    assert "ExecStart=/usr/local/sbin/kiosk-lxc-hotplug\n" in text and "WantedBy=multi-user.target" in text
    with pytest.raises(KioskError, match=r"^Option rescan: 0.0 must be more than 0 seconds$"):
        install.validate(dict(PARAMS, rescan=0.0))
    with pytest.raises(KioskError, match=r"^Option python: /nope is not an executable"):
        install.validate(dict(PARAMS, python="/nope"))


def _installed_files() -> dict[str, bytes]:
    """Everything the agent installs, with its content (check mode must change none of it)."""
    files = {}
    for root in ("/usr/local/lib/kiosk-lxc", "/usr/local/sbin", "/etc/systemd/system"):
        for path in Path(root).rglob("*"):
            if path.is_file() and ("kiosk" in str(path)):
                files[str(path)] = path.read_bytes()
    return files


def test_module_through_ansible_in_check_mode():
    """Whatever state this machine's agent is in (absent, or installed by `make demo`
    with other settings), check mode changes nothing and its verdict matches its plan."""
    before = _installed_files()
    result = play.run_module("kiosk.lxc.hotplug_agent", {"rescan": 3}, check=True, diff=True)
    assert result["_status"] in ("changed", "ok"), result
    assert result["service"] == "daemon" and result["running"] is True
    assert (result["_status"] == "changed") == bool(result["actions"]), result["actions"]
    assert _installed_files() == before
    bad = play.run_module("kiosk.lxc.hotplug_agent", {"rescan": 0}, check=True)
    assert bad["_status"] == "failed" and bad["msg"] == "Option rescan: 0.0 must be more than 0 seconds"
