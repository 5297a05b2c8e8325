# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A module_utils result handed to Ansible the same way by every module.

Plain Python, no ansible imports: the caller passes its AnsibleModule in.
module_utils return `warnings` (sentences for the user) and `diff`
(before/after, computed in check mode too, so a check run and a real run
show the same); the module turns the warnings into Ansible warnings (or
deprecations) and keeps the diff only when --diff is on.
"""

from __future__ import annotations

DEPRECATION_VERSION = "2.0.0"  # when what is deprecated now goes
COLLECTION = "kiosk.lxc"


def hand_over(module, result: dict, deprecated=None) -> dict:
    """result without `warnings` (each given to module.warn, or to module.deprecate where
    `deprecated(warning)` says so) and with `diff` only under --diff: what exit_json gets."""
    for warning in result.pop("warnings", ()):
        if deprecated is not None and deprecated(warning):
            module.deprecate(warning, version=DEPRECATION_VERSION, collection_name=COLLECTION)
        else:
            module.warn(warning)
    diff = result.pop("diff", None)
    if module._diff and diff is not None:
        result["diff"] = diff
    return result
