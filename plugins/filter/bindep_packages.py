# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: bindep_packages
short_description: The Debian packages a bindep.txt selects for one profile
version_added: 0.1.0
description:
  - Reads the content of a C(bindep.txt) (the collection's own list of Debian packages) and returns the names of the
    packages whose selectors include O(profile), in file order. The host role uses it for C(host); the Makefile runs the
    same parser for C(test), so there is one reader of that file.
positional: _input, profile
options:
  _input:
    description: The text of a C(bindep.txt).
    type: str
    required: true
  profile:
    description: The profile to select, for example V(host).
    type: str
    required: true
author:
  - kiosk.lxc contributors (@kiosk-lxc)
"""

EXAMPLES = r"""
- name: Packages a kiosk host needs
  ansible.builtin.debug:
    msg: "{{ lookup('ansible.builtin.file', 'bindep.txt') | kiosk.lxc.bindep_packages('host') }}"
"""

RETURN = r"""
_value:
  description: Package names.
  type: list
  elements: str
  sample: [libvirt-daemon-system, dnsmasq-base]
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.kiosk.lxc.plugins.module_utils.common import bindep


def bindep_packages(text, profile):
    try:
        return bindep.packages(str(text), str(profile))
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    def filters(self):
        return {"bindep_packages": bindep_packages}
