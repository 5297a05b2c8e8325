"""systemd machines on cgroup v2: DeviceAllow= through systemctl.

No systemd runs on this CI host, so systemctl/machinectl are a recorded
stand-in here (FakeSystemd keeps DeviceAllow like systemd does: an empty
assignment resets the list, each entry is added). The kiosk VM scenario runs
the real ones.
"""

from __future__ import annotations

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import rules, systemd
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup.rules import Rule
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

MAJORS = {"char": {"alsa": [116], "mem": [1]}, "block": {"sd": [8]}}


class FakeSystemd:
    def __init__(self, allow):
        self.allow = list(allow)
        self.calls = []

    def __call__(self, argv):
        self.calls.append(argv)
        if argv[:2] == ["machinectl", "show"]:
            if argv[2] != "rim":
                return 1, "", "No machine 'x' known"
            return 0, "Leader=4242\nUnit=machine-rim.scope\n", ""
        if argv[:2] == ["systemctl", "show"]:
            return 0, ", ".join(self.allow) + "\n", ""
        if argv[:3] == ["systemctl", "set-property", "--runtime"]:
            for assignment in argv[4:]:
                value = assignment.split("=", 1)[1]
                if value:
                    self.allow.append(value)
                else:
                    self.allow = []
            return 0, "", ""
        return 1, "", f"unexpected {argv}"


def test_machine_show_gives_leader_and_scope():
    assert systemd.machine_show("rim", FakeSystemd([])) == {"Leader": "4242", "Unit": "machine-rim.scope"}
    with pytest.raises(KioskError, match="Machine 'nope': machinectl does not know it"):
        systemd.machine_show("nope", FakeSystemd([]))


def test_rules_become_device_allow_entries():
    assert systemd.rule_to_entry(Rule("c", 116, None, "rw"), MAJORS) == "char-alsa rw"
    assert systemd.rule_to_entry(Rule("c", 116, 3, "rwm"), MAJORS) == "/dev/char/116:3 rwm"
    assert systemd.rule_to_entry(Rule("b", 8, 0, "r"), MAJORS) == "/dev/block/8:0 r"
    with pytest.raises(KioskError, match="wildcard major"):
        systemd.rule_to_entry(Rule("c", None, None, "r"), MAJORS)
    assert systemd.entry_to_rules("char-alsa rw", MAJORS) == [Rule("c", 116, None, "rw")]
    assert systemd.entry_to_rules("/dev/char/116:3 rwm", MAJORS) == [Rule("c", 116, 3, "rwm")]
    assert systemd.entry_to_rules("/dev/null rw", MAJORS) == [Rule("c", 1, 3, "rw")]
    assert systemd.entry_to_rules("/dev/no-such-node rw", MAJORS) == []


def test_allow_and_deny_through_set_property_runtime():
    fake = FakeSystemd(["/dev/null rw", "char-pts rw"])
    dev = systemd.SystemdDevices("machine-rim.scope", fake, MAJORS)
    wanted = [Rule("c", 116, None, "rw")]
    writes = rules.plan_allow(dev.read(), wanted, dev.key)
    for rule in writes:
        dev.allow(rule)
    assert fake.calls[-1] == ["systemctl", "set-property", "--runtime", "machine-rim.scope", "DeviceAllow=char-alsa rw"]
    assert rules.plan_allow(dev.read(), wanted, dev.key) == []

    dev.deny(Rule("c", 116, None, "w"))
    assert fake.allow == ["/dev/null rw", "char-pts rw", "char-alsa r"]
    dev.deny(Rule("c", 116, None, "rwm"))
    assert fake.allow == ["/dev/null rw", "char-pts rw"]
