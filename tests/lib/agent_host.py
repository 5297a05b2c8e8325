"""Where the hotplug agent's installer puts things in a test: all of it under tmp_path.

The unit tests (the systemd plan, no systemd here) and the integration
tests (the real daemon) share this layout, so this machine's /usr/local,
/etc/systemd and /run stay as they are.
"""

from __future__ import annotations

from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug import install


def agent_host(tmp_path, systemd: bool) -> install.Host:
    return install.Host(
        run=None,
        lib_dir=str(tmp_path / "lib"),
        script=str(tmp_path / "sbin" / "kiosk-lxc-hotplug"),
        unit=str(tmp_path / "kiosk-lxc-hotplug.service"),
        pidfile=str(tmp_path / "run" / "kiosk-lxc-hotplug.pid"),
        systemd=systemd,
    )
