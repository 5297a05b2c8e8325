"""A host without udev data and no card chosen: the guest gets no binds at all.

Found by test_site.py in CI: udev_data without /run/udev once fell back to the
sysfs recipe, giving the guest the host's /sys read-write without the networkd
drop-in, so systemd-networkd never asked for a lease
(docs/docsite/rst/guide_platform.rst, "A writable /sys stops systemd-networkd").
"""

from __future__ import annotations

from ansible_collections.kiosk.lxc.plugins.module_utils.sound import plan


def test_udev_data_without_udev_data_binds_nothing():
    want = plan.desired(
        cards=[], shared_nodes=[], selectors=None, profile="udev_data", missing="ignore", udev_available=False
    )
    assert want["filesystems"] == []
    assert want["hostdevs"] == []
    assert want["dropin"] is False
