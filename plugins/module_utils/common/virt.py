# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way to libvirtd: the bindings, the shared `uri` option, one connection helper.

Plain Python, no ansible imports. This is the only place that imports the
libvirt bindings; the rest of module_utils takes `libvirt` from here.

- ARGUMENT_SPEC is the part of a module's argument spec every module that
  talks to libvirt takes (documented by the kiosk.lxc.libvirt doc fragment):
  `argument_spec={**virt.ARGUMENT_SPEC, ...}`.
- `connect(uri)` opens a connection, or raises KioskError with one message
  for every module, the inventory plugin and the hotplug agent:
  `Cannot connect to libvirt at <uri>: <libvirt's reason>`. libvirt's own
  printing of errors is silenced; they arrive as exceptions.
- `connection(uri)` is the same as a context manager that closes it.

The hotplug agent, a host daemon, imports this too (common.shipped): it
needs nothing beyond the standard library and the libvirt bindings.
"""

from __future__ import annotations

import contextlib

from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

LIBVIRT_IMPORT_ERROR = None
try:
    import libvirt
except ImportError as _exc:  # pragma: no cover - ansible-test's import sanity runs without it
    libvirt, LIBVIRT_IMPORT_ERROR = None, _exc

DEFAULT_URI = "lxc:///system"
ARGUMENT_SPEC = {"uri": {"type": "str", "default": DEFAULT_URI}}


def _quiet(_ctx, _err):
    return None  # errors are raised as exceptions; libvirt would also print them


def connect(uri: str):
    """A libvirt connection to uri; KioskError when the bindings are missing or libvirtd does not answer."""
    if libvirt is None:
        raise KioskError(
            "The libvirt python bindings (libvirt-python) are required", exception=str(LIBVIRT_IMPORT_ERROR)
        )
    libvirt.registerErrorHandler(_quiet, None)
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise KioskError(f"Cannot connect to libvirt at {uri}: {exc}") from exc


@contextlib.contextmanager
def connection(uri: str):
    """`with connection(uri) as conn:` - connect(uri), closed at the end."""
    conn = connect(uri)
    try:
        yield conn
    finally:
        conn.close()
