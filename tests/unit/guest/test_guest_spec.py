"""kiosk.lxc.guest's entries and profiles: every bad field named by its index, before anything is touched."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.guest import profiles, spec
from ansible_collections.kiosk.lxc.plugins.modules import guest as guest_module

REPO = Path(__file__).resolve().parents[3]
DEFAULTS = spec.validate_defaults({k: v["default"] for k, v in spec.DEFAULTS_OPTIONS.items()})


@pytest.mark.parametrize(
    ("entries", "where", "text"),
    [
        ([{"name": "ok"}, {"name": "bad name!"}], "guests[1].name", "is invalid"),
        ([{"name": "a", "memory": "12XB"}], "guests[0].memory", "unknown unit"),
        ([{"name": "a", "memory": 0}], "guests[0].memory", "greater than zero"),
        ([{"name": "a", "vcpu": 0}], "guests[0].vcpu", ">= 1"),
        ([{"name": "a", "init": "sbin/init"}], "guests[0].init", "absolute path"),
        ([{"name": "a", "state": "exploded"}], "guests[0].state", "is not one of"),
        ([{"name": "a", "profile": "root"}], "guests[0].profile", "is not one of"),
        ([{"name": "a"}, {"name": "a"}], "guests[1].name", "already guests[0]"),
        ([{"name": "a", "packages": ["Bad Pkg"]}], "guests[0].packages[0]", "Debian package name"),
        ([{"name": "a", "network": {"bridge": "a-bridge-name-too-long"}}], "guests[0].network.bridge", "bridge"),
        ([{"name": "a", "network": {"ip": "10.0.3.300"}}], "guests[0].network.ip", "IPv4"),
        ([{"name": "a", "sound": {"cards": [{"usb": "xyz"}]}}], "guests[0].sound.cards[0]", "vendor:product"),
        ([{"name": "a", "sound": {"cards": [{"id": "x\ny"}]}}], "guests[0].sound.cards[0].id", "control"),
        ([{"name": "a", "sound": {"missing": "maybe"}}], "guests[0].sound.missing", "is not one of"),
        ([{"name": "a", "colour": "red"}], "guests[0]", "unknown field"),
    ],
)
def test_a_bad_field_is_named_by_its_index(entries, where, text):
    with pytest.raises(KioskError) as err:
        spec.validate(entries, DEFAULTS)
    assert where in err.value.msg and text in err.value.msg and "\n" not in err.value.msg, err.value.msg


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"name": "a"}, {"name": "b", "network": {"antispoof": "perhaps"}}],
         "guests[1].network.antispoof: 'perhaps' is not a valid bool"),
        ([{"name": "a", "state": "exploded"}], "guests[0].state: 'exploded' must be one of: running, stopped, absent"),
        ([{"name": "a", "sound": {"cards": [{"usb": "0c76:161f"}, {"vendor": "x"}]}}],
         "guests[0].sound.cards[1].vendor: is not a field of this entry (its fields: usb, id, name, path, serial)"),
        ([{"name": "a", "sound": {"missing": "maybe"}}],
         "guests[0].sound.missing: 'maybe' must be one of: fail, ignore"),
        ([{"name": "a", "vcpu": "two"}], "guests[0].vcpu: 'two' is not a valid int"),
        ([{"name": "a", "packages": {"mpv": 1}}], "guests[0].packages: {'mpv': 1} is not a valid list"),
        ([{"name": "a"}, {"state": "running"}], "guests[1].name: is required"),
        ([{"name": "a"}, ["b"]], "guests[1]: ['b'] is not a valid dict"),
        ([{"name": "a", "sound": {"cards": [{"id": "x"}, "usb"]}}],
         "guests[0].sound.cards[1]: 'usb' is not a valid dict"),
    ],
)  # fmt: skip
def test_what_ansible_refuses_in_an_entry_is_named_by_its_index(entries, message):
    """The module's first check, before ansible-core's own (whose message names no index)."""
    assert guest_module.guests_problem({"kiosk": "k", "guests": entries}) == message


@pytest.mark.parametrize(
    "guests",
    [
        [{"name": "a", "vcpu": "2", "autostart": "yes", "network": {"antispoof": "false", "ip": "10.0.3.5"}}],
        [{"name": "a", "sound": {"cards": [{"usb": "0c76:161f"}], "profile": "udev_data"}}, {"name": "b"}],
        ["name=a state=stopped"],  # ansible-core reads k=v text as a dict
        [],
        None,  # under ansible-test's validate-modules, which reads no parameters
    ],
)
def test_what_ansible_accepts_passes_the_first_check(guests):
    assert guest_module.guests_problem(None if guests is None else {"guests": guests}) is None


def test_a_good_entry_gets_the_defaults():
    (want,) = spec.validate([{"name": "p1", "packages": ["mpv", "mpv"], "sound": {}}], DEFAULTS)
    assert (want.memory, want.vcpu, want.init, want.autostart, want.bridge) == (
        "512MiB", 1, "/lib/systemd/systemd", True, "lxcbr0",
    )  # fmt: skip
    assert want.packages == ["mpv"] and want.sound == {"cards": None, "profile": None, "missing": "fail"}


def test_seed000_is_privileged_with_a_deprecation_warning():
    (want,) = spec.validate([{"name": "p1", "profile": "seed000"}], DEFAULTS)
    assert want.profile == "privileged" and "now called 'privileged'" in want.warnings[0]


@pytest.mark.parametrize(
    ("given", "defined", "recorded", "name", "record"),
    [
        (None, False, None, "confined", "confined"),  # a new guest: the default
        (None, True, "confined", "confined", "confined"),  # keeps what its metadata records
        (None, True, "seed000", "privileged", "seed000"),  # the old record is kept: adopting it changes nothing
        ("privileged", True, "seed000", "privileged", "seed000"),
        (None, True, None, "legacy", None),  # defined before profiles: named, nothing recorded
        ("confined", True, None, "confined", "confined"),  # brought under a profile when one is given
    ],
)
def test_profile_resolution(given, defined, recorded, name, record):
    profile, recorded_as = profiles.resolve(given, defined, recorded, "confined")
    assert (profile.name, recorded_as) == (name, record)


def test_the_role_describes_kiosk_guests_with_the_modules_options():
    """One spec: the role's argument spec of kiosk_guests entries is the module's `guests` options."""
    role = yaml.safe_load((REPO / "roles/guest/meta/argument_specs.yml").read_text())
    entry = role["argument_specs"]["main"]["options"]["kiosk_guests"]["options"]

    def shape(options):
        return {
            k: (v.get("type"), v.get("elements"), v.get("choices"), v.get("default"), shape(v.get("options") or {}))
            for k, v in options.items()
        }

    assert shape(entry) == shape(spec.GUEST_OPTIONS)
    assert guest_module.ARGUMENT_SPEC["guests"]["options"] is spec.GUEST_OPTIONS


def _fields(options: dict, prefix: str = "") -> set[str]:
    """Every field of a guest entry, by its path (sound.cards is one field: a list of selectors)."""
    out = set()
    for key, opt in options.items():
        path = f"{prefix}{key}"
        if opt.get("type") == "dict" and opt.get("options"):
            out |= _fields(opt["options"], f"{path}.")
        else:
            out.add(path)
    return out


def test_bad_inputs_has_a_case_for_every_field_of_a_guest_entry():
    """tests/bad_inputs.yml (run through Ansible, touching nothing) fails each field of a `guests` entry.

    A case names the field by its index and path (`guests[0].network.ip`), as the module's message
    does, Ansible's own checks of types and choices included.
    """
    cases = yaml.safe_load((REPO / "tests/bad_inputs.yml").read_text())
    named = set()
    for case in cases:
        if case.get("module") == "kiosk.lxc.guest" and case["option"].startswith("guests["):
            named.add(re.sub(r"\[\d+\]", "", re.sub(r"^guests\[\d+\]\.", "", case["option"])))
    fields = _fields(spec.GUEST_OPTIONS)
    missing = fields - named
    assert missing == set(), f"no bad case in tests/bad_inputs.yml for guests[].{sorted(missing)}"
