"""Where the hotplug agent's and the libvirt hook's installers put things in a test: all of it under tmp_path.

The unit tests (the systemd plan, no systemd here) and the integration
tests (the real daemon) share this layout, so this machine's /usr/local,
/etc/systemd, /etc/libvirt and /run stay as they are. Both daemons share the
library root (tmp_path/lib), as on a kiosk, and both know both launchers
(for the old shared library's removal).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import device, hook
from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug import install


def launchers(tmp_path) -> tuple[str, str]:
    return str(Path(tmp_path, "hooks", "lxc.d", hook.HOOK_NAME)), str(Path(tmp_path, "sbin", "kiosk-lxc-hotplug"))


def agent_host(tmp_path, systemd: bool) -> install.Host:
    return install.Host(
        run=None,
        lib_dir=str(tmp_path / "lib"),
        script=launchers(tmp_path)[1],
        unit=str(tmp_path / "kiosk-lxc-hotplug.service"),
        pidfile=str(tmp_path / "run" / "kiosk-lxc-hotplug.pid"),
        systemd=systemd,
        legacy_launchers=launchers(tmp_path),
    )


def hook_host(tmp_path, python: str = "/usr/bin/python3") -> device.Host:
    """The cgroup_device hook's installer on the same tmp_path; no libvirtd answers (nothing is reloaded)."""
    return device.Host(
        hook_dir=str(tmp_path / "hooks"),
        lib_dir=str(tmp_path / "lib"),
        python=python if Path(python).exists() else sys.executable,
        pidfiles=(),
        libvirt_socket=str(tmp_path / "no-libvirtd"),
        legacy_launchers=launchers(tmp_path),
    )
