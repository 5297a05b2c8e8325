# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which Debian packages are installed, read from dpkg's status file (the one reader of it).

Plain Python, no ansible imports. A kiosk run asks apt to install only what
this says is missing: opening apt's cache costs seconds on every run, reading
the status file a few milliseconds. Anything this cannot answer for sure (a
name with a version, a wildcard, an architecture, a virtual package) counts
as missing, so apt is asked and decides, as it did before.
"""

from __future__ import annotations

import re

STATUS = "/var/lib/dpkg/status"
# A plain Debian package name (Debian Policy 5.6.7): apt gets anything else.
NAME_RE = re.compile(r"[a-z0-9][a-z0-9.+-]+")


def installed(status: str = STATUS) -> set[str]:
    """The names of the packages dpkg lists as installed (Status: <want> ok installed)."""
    names: set[str] = set()
    package = None
    try:
        with open(status, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("Package: "):
                    package = line[9:].strip()
                elif line.startswith("Status: ") and package:
                    words = line.split()
                    if len(words) == 4 and words[2] == "ok" and words[3] == "installed":
                        names.add(package)
                elif not line.strip():
                    package = None
    except FileNotFoundError:
        return set()
    return names


def missing(packages: list[str], have: set[str]) -> list[str]:
    """Those of packages not in have (installed()), in their order, once each; a name not plain counts as missing."""
    out = []
    for name in packages:
        if (not NAME_RE.fullmatch(name) or name not in have) and name not in out:
            out.append(name)
    return out
