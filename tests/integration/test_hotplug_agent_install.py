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
from agent_host import agent_host
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import hook
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug import install

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
    lib = os.path.join(host.lib_dir, "ansible_collections/kiosk/lxc/plugins/module_utils")
    assert not os.path.exists(f"{lib}/hotplug/agent.py")
    assert os.path.exists(f"{lib}/cgroup/rules.py")  # the cgroup_device hook's share stays
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


def test_an_agent_older_than_a_module_it_shares_with_the_hook_is_restarted(host, tmp_path):
    """The cgroup_device hook task installs the device cgroup modules the agent runs too (the same files).

    Seen before the fix: after the hook task had written them, this module found every file as it wanted
    it, reported no change, and the running agent kept the old code until its next restart.
    """
    params = dict(PARAMS, log_file=str(tmp_path / "hotplug.log"))
    install.run(params, False, host)
    pid = install.daemon_pid(host)
    assert wait_log(tmp_path / "hotplug.log", "started: watching sound cards")
    shared = install.module_path(host, "cgroup.rules")
    hook.install({shared: (hook.module_source("cgroup.rules"), 0o644)}, [shared])  # what the hook task does

    checked = install.run(params, True, host)
    assert checked["actions"] == ["restart kiosk-lxc-hotplug"]
    assert f"changed since the agent started: {shared}" in checked["diff"]["before"]
    assert install.daemon_pid(host) == pid
    again = install.run(params, False, host)
    assert again["actions"] == ["restart kiosk-lxc-hotplug"]
    assert install.daemon_pid(host) not in (None, pid) and not install.alive(pid)
    assert install.run(params, False, host)["changed"] is False  # the new agent is younger than its files


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
