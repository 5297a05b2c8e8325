# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Strings from users, USB devices, guests and leases: checked before use, escaped in lines.

Plain Python, no ansible imports.

- `escape(text)` writes every control character as an escape (\\n, \\t, \\x1b ...),
  so a string can never start a line of its own in a log, a message or a file;
- `quote(text)` is the escaped string in quotes, for a message naming a value;
- `check_params(params)` refuses a control character in any string a module was
  given (lists and dicts walked, the option named with its index), before the
  module touches anything: each of them may reach a config file, a command line
  or XML;
- `fullmatch(option, value, pattern, what)` is a value that matches pattern as a
  whole (never `re.match` with `$`, which lets a trailing newline through).
"""

from __future__ import annotations

import re

from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

# C0, DEL and C1 controls; U+2028/U+2029 end a line for some readers too.
CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: re.Match) -> str:
    char = match.group(0)
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escape(text) -> str:
    """text with each control character written as an escape: always one line."""
    return CONTROL_RE.sub(_escape_one, str(text))


def quote(text) -> str:
    return "'" + escape(text) + "'"


def has_control(text: str) -> bool:
    return CONTROL_RE.search(text) is not None


def check_line(option: str, value) -> None:
    """Refuse a string holding a control character (a newline starts a line of its own)."""
    if isinstance(value, str) and has_control(value):
        char = escape(CONTROL_RE.search(value).group(0))
        raise KioskError(f"{option}: {quote(value)} holds the control character {char}, which no value may hold")


def check_params(params, prefix: str = "", skip: tuple = ()) -> None:
    """check_line on every string in params (a dict, a list, or one value), named option[i].key."""
    if isinstance(params, dict):
        for key, value in params.items():
            check_line(prefix, key)  # a key of a dict option (metadata) is a value too
            name = f"{prefix}.{key}" if prefix else str(key)
            if name not in skip:
                check_params(value, name, skip)
    elif isinstance(params, (list, tuple)):
        for i, value in enumerate(params):
            check_params(value, f"{prefix}[{i}]", skip)
    else:
        check_line(prefix, params)


def fullmatch(option: str, value, pattern, what: str) -> str:
    """value if the whole of it matches pattern, else a KioskError naming option and what it must be."""
    text = value if isinstance(value, str) else ""
    if not re.fullmatch(pattern, text):
        raise KioskError(f"{option}: {quote(value)} {what}")
    return text
