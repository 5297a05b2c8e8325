"""A new guest is defined whole or not at all (module_utils/domain/manage.py, against the real libvirtd).

A bridge that does not exist is refused before the guest is defined, naming the option. A new
guest whose first start fails anyway (here: a filesystem whose source directory is not there,
which libvirt finds only when it starts the guest) is undefined again: no guest is left that
the run did not finish.
"""

from __future__ import annotations

import secrets

import libvirt
import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import manage


def _defined(conn, name) -> bool:
    try:
        conn.lookupByName(name)
        return True
    except libvirt.libvirtError:
        return False


def test_a_missing_bridge_is_refused_before_the_guest_is_defined(libvirt_conn, guest_name, busybox_rootfs):
    bridge = f"ktnobr{secrets.token_hex(2)}"
    params = {"name": guest_name, "rootfs": str(busybox_rootfs()), "init": "/init", "memory": 64,
              "interfaces": [{"bridge": bridge}]}  # fmt: skip
    for check_mode in (True, False):
        with pytest.raises(KioskError) as err:
            manage.ensure(libvirt_conn, params, check_mode=check_mode)
        msg = err.value.msg
        assert "\n" not in msg
        assert f"interfaces[0].bridge: bridge '{bridge}' does not exist on this host" in msg, msg
        assert not _defined(libvirt_conn, guest_name)


def test_a_new_guest_whose_first_start_fails_is_undefined_again(libvirt_conn, guest_name, busybox_rootfs, tmp_path):
    params = {"name": guest_name, "rootfs": str(busybox_rootfs()), "init": "/init", "memory": 64,
              "filesystems": [{"source": str(tmp_path / "gone"), "target": "/mnt"}]}  # fmt: skip
    with pytest.raises(KioskError) as err:
        manage.ensure(libvirt_conn, params)
    assert "start failed" in err.value.msg
    assert "undefined again" in err.value.msg
    assert "\n" not in err.value.msg
    assert not _defined(libvirt_conn, guest_name)
