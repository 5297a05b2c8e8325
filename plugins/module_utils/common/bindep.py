# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one reader of the collection's bindep.txt: which Debian packages a profile needs.

Used by the host role (through the ``kiosk.lxc.bindep_packages`` filter) and by the Makefile,
which runs this file with the system's python3 before any virtualenv exists:

    python3 plugins/module_utils/common/bindep.py test bindep.txt

Only what bindep.txt uses is understood: ``name [selector ...]`` with the selectors
``platform:dpkg`` and profile names; comments and blank lines are skipped.
"""

from __future__ import annotations

import re
import sys

_LINE = re.compile(r"(?P<name>[a-z0-9][a-z0-9+.-]*)(?:\s+\[(?P<selectors>[^\]]*)\])?")


def packages(text: str, profile: str) -> list[str]:
    """The package names of ``text`` (bindep.txt's content) selected for ``profile``, in file order."""
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = _LINE.fullmatch(line)
        if m is None:
            raise ValueError(f"bindep.txt line {number}: cannot read {raw.strip()!r} (want 'package [selectors]')")
        if profile in (m.group("selectors") or "").split() and m.group("name") not in out:
            out.append(m.group("name"))
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: bindep.py PROFILE BINDEP_TXT\n")
        return 2
    with open(argv[1], encoding="utf-8") as fh:
        text = fh.read()
    try:
        names = packages(text, argv[0])
    except ValueError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    if not names:
        # An empty list is never right here: it would make 'make deps' install nothing and say so.
        sys.stderr.write(f"bindep.txt selects no package for profile {argv[0]!r}\n")
        return 1
    sys.stdout.write("".join(f"{n}\n" for n in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
