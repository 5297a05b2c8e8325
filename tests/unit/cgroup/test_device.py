"""The module's input checks (desired step): everything is refused before anything is read or written."""

from __future__ import annotations

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import device
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

MAJORS = {"char": {"alsa": [116]}, "block": {}}


def params(**kw):
    return {"domain": None, "machine": None, "cgroup": None, "rules": ["c alsa:* rw"], "state": "present", **kw}


def test_persistent_defaults_to_true_for_a_guest_only():
    assert device.desired(params(domain="p1"), MAJORS).persistent is True
    assert device.desired(params(machine="rim"), MAJORS).persistent is False
    assert device.desired(params(domain="p1", persistent=False), MAJORS).persistent is False


def test_names_are_resolved_while_validating():
    want = device.desired(params(cgroup="/machine/x"), MAJORS)
    assert [str(r) for r in want.wanted] == ["c 116:* rw"]
    assert [str(s) for s in want.specs] == ["c alsa:* rw"]


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"domain": "p1", "machine": "rim"}, "Give exactly one of domain, machine or cgroup (got domain, machine)"),
        ({}, "(got none)"),
        ({"machine": "rim", "persistent": True}, "only a libvirt guest (domain) keeps rules, not a machine"),
        ({"domain": "p1", "rules": []}, "give at least one device rule"),
        ({"domain": "p1", "rules": ["c drm:* rw"]}, "major name 'drm' is not a char device"),
    ],
)
def test_bad_parameters(kw, words):
    with pytest.raises(KioskError) as err:
        device.desired(params(**kw), MAJORS)
    assert words in err.value.msg
