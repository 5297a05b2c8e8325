# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one error type module_utils raise: a user-facing sentence plus details.

Plain Python, no ansible imports: modules turn it into fail_json(msg=..., **details).
"""

from __future__ import annotations


class KioskError(Exception):
    """An error to show the user: `msg` is one sentence naming the object and the cause."""

    def __init__(self, msg: str, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = details
