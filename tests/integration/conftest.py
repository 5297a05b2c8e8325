"""What every integration session shares: the machine's libvirt hook, put back as it was.

Any test that gives a guest device rules through kiosk.lxc.cgroup_device (or the guest module, the
sound module, a role) installs the libvirt hook and its library, as a kiosk run does. The session
keeps both, so the machine ends with the hook it had (or none), and the session guard in
tests/conftest.py still sees everything else a test leaves.
"""

from __future__ import annotations

import machine
import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import device
from ansible_collections.kiosk.lxc.plugins.module_utils.common import shipped


@pytest.fixture(scope="session", autouse=True)
def _machine_hook_kept():
    with machine.kept(device.hook_path(device.Host()), shipped.LIB_ROOT):
        yield
