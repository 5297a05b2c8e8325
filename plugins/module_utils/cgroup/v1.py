# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""cgroup v1 device controller: devices.list / devices.allow / devices.deny.

Checked on this project's CI host (hybrid layout, v1 controllers): writing
`c 116:77 rwm` to a libvirt LXC guest's devices.allow turns the guest's
open() of that node from EPERM into ENXIO, and devices.deny turns it back.
"""

from __future__ import annotations

import os

from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup.rules import Rule, parse_list_line, v1_key
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError


class V1Devices:
    """The device rules of one v1 cgroup directory (an absolute path)."""

    version = "v1"
    key = staticmethod(v1_key)

    def __init__(self, path: str):
        self.path = path

    def read(self) -> list[Rule]:
        try:
            with open(os.path.join(self.path, "devices.list"), encoding="utf-8") as fh:
                return [parse_list_line(line) for line in fh if line.strip()]
        except OSError as exc:
            raise KioskError(f"cgroup {self.path}: cannot read devices.list: {exc.strerror}") from exc

    def _write(self, name: str, rule: Rule) -> None:
        try:
            with open(os.path.join(self.path, name), "w", encoding="utf-8") as fh:
                fh.write(f"{rule}\n")
        except OSError as exc:
            raise KioskError(f"cgroup {self.path}: writing '{rule}' to {name} failed: {exc.strerror}") from exc

    def allow(self, rule: Rule) -> None:
        self._write("devices.allow", rule)

    def deny(self, rule: Rule) -> None:
        self._write("devices.deny", rule)
