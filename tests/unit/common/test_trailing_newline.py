"""A trailing newline in a value is refused by the validator itself (re.match with $ let it through).

Each value here reached a file or a command line before: /etc/subuid (subid name), the dnsmasq
configuration (a dhcp_hosts name split its dhcp-host line in two), the rootfs user (useradd in
the new rootfs), the rootfs name and packages (a directory name, debootstrap's command line).
"""

from __future__ import annotations

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.bridge import spec as bridgespec
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.rootfs import build
from ansible_collections.kiosk.lxc.plugins.module_utils.sound import select
from ansible_collections.kiosk.lxc.plugins.module_utils.subid import ranges

BRIDGE = {"name": "ktbr0", "address": "10.77.0.1/24"}
DEB = {"method": "debootstrap", "arch": "amd64"}


@pytest.mark.parametrize(
    ("validate", "params", "option"),
    [
        (ranges.desired, {"name": "kiosk-a\n"}, "name"),
        (bridgespec.build_spec, {**BRIDGE, "name": "ktbr0\n"}, "name"),
        (
            bridgespec.build_spec,
            {**BRIDGE, "dhcp_hosts": [{"mac": "52:54:00:00:00:05", "ip": "10.77.0.5", "name": "player\n"}]},
            "name",
        ),
        (bridgespec.build_spec, {**BRIDGE, "dhcp_hosts": [{"mac": "52:54:00:00:00:05\n", "ip": "10.77.0.5"}]}, "mac"),
        (bridgespec.build_spec, {**BRIDGE, "dns_domain": "kiosk.lan\n"}, "dns_domain"),
        (build.desired, {**DEB, "user": "kiosk\n"}, "user"),
        (build.desired, {**DEB, "name": "base\n"}, "name"),
        (build.desired, {**DEB, "packages": ["mpv\n"]}, "packages"),
        (build.desired, {"method": "image", "src": "/etc/hostname", "sha256": "a" * 64 + "\n"}, "sha256"),
        (select.normalize_selector, {"usb": "0c76:161f\n"}, "usb"),
    ],
)
def test_a_trailing_newline_is_refused_naming_the_option(validate, params, option):
    with pytest.raises(KioskError) as err:
        validate(params)
    assert option in err.value.msg
    assert "\n" not in err.value.msg, err.value.msg
