# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    # How far a kiosk.lxc module supports check mode and diff mode, on which platforms. Use one variant
    # together with ansible.builtin.action_common_attributes, which describes the attributes:
    #   extends_documentation_fragment:
    #     - ansible.builtin.action_common_attributes
    #     - kiosk.lxc.attributes            # or kiosk.lxc.attributes.no_diff
    # A module that says otherwise for one attribute keeps its own `attributes:` entry, which wins.

    # A module that changes the host: a check run plans what a real run does, --diff shows it.
    DOCUMENTATION = r"""
attributes:
  check_mode: {support: full}
  diff_mode: {support: full}
  platform: {platforms: posix}
"""

    # A module with nothing to diff: an _info module (it changes nothing), or one that only starts a service.
    NO_DIFF = r"""
attributes:
  check_mode: {support: full}
  diff_mode: {support: none}
  platform: {platforms: posix}
"""
