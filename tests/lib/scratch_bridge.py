"""A Linux bridge of a test's own for guests' interfaces: no address, nothing leaves it."""

from __future__ import annotations

import contextlib
import secrets
import subprocess


@contextlib.contextmanager
def scratch_bridge(prefix: str = "ktbr"):
    """`with scratch_bridge() as name:` - a new bridge, up, deleted at the end."""
    name = f"{prefix}{secrets.token_hex(3)}"[:15]
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)
