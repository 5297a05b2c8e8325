# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  uri:
    description:
      - The libvirt connection URI of the LXC driver.
    type: str
    default: lxc:///system
requirements:
  - libvirt-python (C(python3-libvirt) on Debian)
"""
