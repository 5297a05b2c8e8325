"""Rule parsing, /proc/devices names and the allow/deny algebra (plain pytest, no root)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import rules
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup.rules import Rule, RuleSpec
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

# A /proc/devices with the same major for a char and a block device (116), and one block name twice.
PROC_DEVICES = Path(__file__).resolve().parents[2] / "fixtures" / "proc" / "devices"
LIBVIRT_LXC_LIST = ["c 1:3 rwm", "c 1:5 rwm", "c 5:2 rwm", "c 10:229 rwm", "c 136:* rwm"]


@pytest.fixture
def majors():
    return rules.read_proc_devices(str(PROC_DEVICES))


def lst(*lines):
    return [rules.parse_list_line(line) for line in lines]


def test_proc_devices_names_map_to_every_major(majors):
    assert majors["char"]["alsa"] == [116]
    assert majors["block"]["sd"] == [8, 65]
    assert "alsa" not in majors["block"]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("c 116:* rw", RuleSpec("c", 116, None, "rw")),
        ("  b 8:0   mwr ", RuleSpec("b", 8, 0, "rwm")),
        ("c alsa:3 r", RuleSpec("c", "alsa", 3, "r")),
        ("c *:* m", RuleSpec("c", None, None, "m")),
        ({"type": "c", "major": "alsa", "minor": "*", "access": "rw"}, RuleSpec("c", "alsa", None, "rw")),
        ({"type": "c", "major": 226}, RuleSpec("c", 226, None, "rwm")),
    ],
)
def test_parse_spec_accepts_the_devices_allow_syntax_and_dicts(item, expected):
    assert rules.parse_spec(item) == expected


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ("c 116 rw", "is not a device rule"),
        ("c116:*rw", "is not a device rule"),
        ("x 116:* rw", "device type 'x' is unknown"),
        ("a *:* rwm", "type 'a'"),
        ("c 116:* rwx", "access 'rwx'"),
        ("c 116:* ", "is not a device rule"),
        ("c 5000:* r", "major '5000'"),
        ("c 116:-1 r", "minor '-1'"),
        ("c 1$x:* r", "neither a number"),
        ({"type": "c"}, "needs both"),
        ({"type": "c", "major": 1, "colour": "red"}, "unknown keys colour"),
        (42, "neither a rule string nor a dict"),
    ],
)
def test_parse_spec_rejects_bad_rules_with_one_sentence(item, words):
    with pytest.raises(KioskError) as err:
        rules.parse_spec(item)
    assert words in err.value.msg


def test_names_resolve_from_proc_devices_never_assumed(majors):
    assert rules.parse_spec("c alsa:* rw").resolve(majors) == [Rule("c", 116, None, "rw")]
    assert rules.parse_spec("b sd:* r").resolve(majors) == [Rule("b", 8, None, "r"), Rule("b", 65, None, "r")]
    with pytest.raises(KioskError, match="major name 'snd' is not a char device in /proc/devices"):
        rules.parse_spec("c snd:* rw").resolve(majors)
    # A char name is not a block name.
    with pytest.raises(KioskError, match="not a block device"):
        rules.parse_spec("b alsa:* rw").resolve(majors)


@pytest.mark.parametrize(
    ("entry", "rule", "covered"),
    [
        ("a *:* rwm", "c 116:3 rw", True),
        ("c 116:* rwm", "c 116:3 rw", True),
        ("c 116:* r", "c 116:3 rw", False),
        ("c 116:3 rw", "c 116:* rw", False),  # a single minor does not cover all of them
        ("b 116:* rwm", "c 116:3 r", False),
        ("c *:* m", "c 116:3 m", True),
        ("c 116:3 rw", "c 116:3 rw", True),
    ],
)
def test_covers_is_the_kernels_one_entry_check(entry, rule, covered):
    assert rules.covers(rules.parse_list_line(entry), rules.parse_list_line(rule)) is covered


def test_allow_writes_only_what_is_missing_and_predicts_the_kernels_list():
    current = lst(*LIBVIRT_LXC_LIST, "c 116:* r")
    wanted = lst("c 1:3 rw", "c 116:* rw", "c 226:0 rw", "c 226:0 m")
    writes = rules.plan_allow(current, wanted)
    assert [str(r) for r in writes] == ["c 116:* rw", "c 226:0 rwm"]
    after = rules.after_allow(current, writes)
    # Merged into the same key in place, new keys appended (the kernel's list order).
    assert [str(r) for r in after] == [*LIBVIRT_LXC_LIST, "c 116:* rw", "c 226:0 rwm"]
    assert rules.plan_allow(after, wanted) == []


def test_allow_on_an_allow_all_cgroup_writes_nothing():
    assert rules.plan_allow(lst("a *:* rwm"), lst("c 116:* rwm")) == []


def test_deny_takes_exactly_the_given_rules():
    current = lst(*LIBVIRT_LXC_LIST, "c 116:* rwm", "c 116:7 rw")
    writes = rules.plan_deny(current, lst("c 116:7 rwm", "c 116:* w", "c 226:* rw"))
    # Only access that is really there, only on the exact key; 226 has no entry.
    assert [str(r) for r in writes] == ["c 116:7 rw", "c 116:* w"]
    after = rules.after_deny(current, writes)
    assert [str(r) for r in after] == [*LIBVIRT_LXC_LIST, "c 116:* rm"]
    assert rules.plan_deny(after, lst("c 116:7 rwm", "c 116:* w")) == []


def test_deny_warns_when_a_wider_rule_still_allows():
    after = lst("c 116:* rwm")
    notes = rules.still_covered(after, lst("c 116:7 rw"))
    assert notes == ["Rule 'c 116:7 rw' was removed, but 'c 116:* rwm' still allows it"]
    assert rules.still_covered(after, lst("c 116:* rw")) == []


def test_duplicate_wanted_rules_fold_into_one_write():
    assert [str(r) for r in rules.plan_allow([], lst("c 116:* r", "c 116:* w"))] == ["c 116:* rw"]


def test_allows_everything():
    assert rules.allows_everything(lst("a *:* rwm"))
    assert not rules.allows_everything(lst(*LIBVIRT_LXC_LIST))
