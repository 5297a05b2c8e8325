"""sound_passthrough's parameter checks: bad input fails before anything is read or touched."""

from __future__ import annotations

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.sound.passthrough import check_udev, validate


def _params(tmp_path, **kw):
    base = {
        "domain": "player1",
        "cards": None,
        "profile": "udev_data",
        "missing": "fail",
        "state": "present",
        "host_udev_dir": str(tmp_path),
    }
    return dict(base, **kw)


def test_good_params_come_back_with_normalised_selectors(tmp_path):
    got = validate(_params(tmp_path, cards=[{"usb": "0C76:161F", "id": None}]))
    assert got["cards"] == [{"usb": "0c76:161f"}]


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"profile": "alsa"}, "Option profile: 'alsa' is not one of udev_data, sysfs"),
        ({"missing": "warn"}, "Option missing: 'warn' is not one of fail, ignore"),
        ({"state": "gone"}, "Option state: 'gone' is not one of present, absent"),
        ({"cards": [{}]}, "Option cards: a selector needs at least one of"),
    ],
)
def test_bad_choices_fail_naming_the_option(tmp_path, kw, msg):
    with pytest.raises(KioskError) as err:
        validate(_params(tmp_path, **kw))
    assert err.value.msg.startswith(msg)


def test_udev_data_needs_the_hosts_udev_data_for_a_chosen_card(tmp_path):
    missing = str(tmp_path / "udev")
    params = validate(_params(tmp_path, host_udev_dir=missing))
    with pytest.raises(KioskError) as err:
        check_udev(params, {"chosen": [{"number": 1}]})
    assert err.value.msg == (
        f"Option profile: udev_data binds the host's udev data {missing} into the guest,"
        " and it does not exist (is udev running on the host?)"
    )
    # no card chosen (missing: ignore): nothing to bind, no error
    assert check_udev(params, {"chosen": []}) is False
    # neither sysfs nor absent needs it
    assert check_udev(validate(_params(tmp_path, host_udev_dir=missing, profile="sysfs")), {"chosen": [1]})
    assert check_udev(validate(_params(tmp_path, host_udev_dir=missing, state="absent")), {"chosen": [1]})


@pytest.mark.parametrize("option", ["udev_data_dir", "host_dev_dir", "host_udev_dir"])
def test_a_relative_directory_is_refused_naming_the_option(tmp_path, option):
    """A relative path would be taken from wherever the module happens to run (and bound into the guest)."""
    with pytest.raises(KioskError) as err:
        validate(_params(tmp_path, **{option: "var/lib/kiosk-lxc/udev"}))
    assert err.value.msg == f"Option {option}: 'var/lib/kiosk-lxc/udev' is not an absolute path"
