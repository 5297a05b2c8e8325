"""hotplug.install under systemd: the unit keeps the agent up, and a healthy install plans nothing.

No systemd runs on this machine: the unit is checked as an INI file and the
plan is computed against files installed in tmp_path with the service state
handed in (what `systemctl is-active`/`is-enabled` would say). The real
thing runs in the kiosk VM (molecule/hotplug: converge, then idempotence).
"""

from __future__ import annotations

import configparser
import os
import subprocess

import pytest
from agent_host import agent_host
from ansible_collections.kiosk.lxc.plugins.module_utils.common import shipped
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug import install

PARAMS = {"uri": "lxc:///system", "state": "present", "rescan": 5.0, "log_file": None, "python": "/usr/bin/python3"}


def test_the_unit_brings_the_agent_back_after_any_exit_and_never_gives_up():
    """Seen in the kiosk VM with Restart=on-failure: a SIGTERM that did not come from systemctl left the
    agent inactive, so cards reached no guest and the next host role run reported changed (start)."""
    unit = configparser.ConfigParser(interpolation=None)
    unit.read_string(install.unit_text("/usr/local/sbin/kiosk-lxc-hotplug"))
    assert unit["Service"]["Restart"] == "always"
    assert unit["Unit"]["StartLimitIntervalSec"] == "0"
    assert unit["Service"]["ExecStart"] == "/usr/local/sbin/kiosk-lxc-hotplug"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.fixture
def host(tmp_path):
    h = agent_host(tmp_path, systemd=True)
    tree = install.plan_tree(h)
    shipped.write_tree(tree)
    files = install.wanted_files(PARAMS, h, tree)
    shipped.write_files(files, list(files), "the agent")
    return h


def agent_file(host, name: str) -> str:
    return os.path.join(install.plan_tree(host).path, shipped.relpath(f"{shipped.PACKAGE}.{name}"))


@pytest.mark.parametrize(
    ("running", "enabled", "steps"),
    [
        (True, True, []),
        (False, True, ["start"]),
        (True, False, ["enable"]),
        (False, False, ["enable", "start"]),
    ],
)
def test_an_installed_agent_plans_only_what_its_service_state_lacks(host, running, enabled, steps):
    result = install.plan(PARAMS, {"running": running, "enabled": enabled, "present": []}, host)
    assert result["install"] == []
    assert result["steps"] == steps
    assert install.actions_of(result) == [f"{s} kiosk-lxc-hotplug" for s in steps]


def test_a_changed_unit_is_reloaded_reenabled_and_restarts_the_agent(host):
    with open(host.unit, "a", encoding="utf-8") as fh:
        fh.write("Restart=on-failure\n")  # a unit from an older version of the collection
    result = install.plan(PARAMS, {"running": True, "enabled": True, "present": []}, host)
    assert result["install"] == [host.unit]
    assert result["steps"] == ["daemon-reload", "enable", "restart"]


def systemctl_saying(main_pid: int):
    """A stand-in for systemctl (no systemd here): the unit is active and enabled, with this main pid."""

    def run(argv):
        if argv[:2] == ["systemctl", "show"]:
            return 0, f"{main_pid}\n", ""
        return 0, "", ""

    return run


def test_an_agent_started_before_its_files_were_written_is_restarted(host):
    """This test's own process stands for an agent left on old code: it started before tmp_path's files."""
    host.run = systemctl_saying(os.getpid())
    current = install.read(host)
    assert current["running"] and host.script in current["newer"]
    assert agent_file(host, "cgroup.rules") in current["newer"]
    assert install.plan(PARAMS, current, host)["steps"] == ["restart"]


def test_an_agent_started_after_its_files_were_written_is_left_alone(host):
    agent = subprocess.Popen(["sleep", "30"])
    try:
        host.run = systemctl_saying(agent.pid)
        current = install.read(host)
        assert current["newer"] == []
        assert install.plan(PARAMS, current, host)["steps"] == []
        host.run = systemctl_saying(0)  # systemd knows no main pid: nothing to compare
        assert install.read(host)["newer"] == []
    finally:
        agent.kill()
        agent.wait()


def test_the_kiosk_user_reaches_the_agents_command_line_and_a_bad_one_is_refused():
    params = {"uri": "lxc:///system", "rescan": 5.0, "state": "present", "python": "/bin/sh"}
    assert "--kiosk-user" not in install.agent_args(dict(params, kiosk_user="kiosk"))  # the default: unchanged script
    assert install.agent_args(dict(params, kiosk_user="player"))[-2:] == ["--kiosk-user", "player"]
    with pytest.raises(KioskError, match=r"^Option kiosk_user: 'play\\ner' is not a user name$"):
        install.validate(dict(params, kiosk_user="play\ner"))
