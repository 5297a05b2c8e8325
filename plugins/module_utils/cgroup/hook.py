# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The libvirt hook that re-applies a guest's persistent device rules at start.

libvirt (>= 6.5) runs /etc/libvirt/hooks/lxc and then every executable in
/etc/libvirt/hooks/lxc.d/ in name order, as `<script> <guest> <op> <subop> -`
with the domain XML on stdin. We install ours as lxc.d/HOOK_NAME, so an
operator's own `lxc` hook is never touched. It acts on `started begin`: the
guest's cgroup exists then (its init has just been started, so there is a
short window before the rules are in). It:
- reads the rules from the <metadata> in the XML on stdin, and the guest's
  controller pid from the XML's id attribute (for LXC, the id is that pid),
  and never calls back into libvirtd (that can deadlock libvirt);
- never fails the start: a malformed rule, an unknown major name or a write
  that fails is logged to LOG_FILE and skipped, and the hook exits 0.

libvirt finds hooks when it starts and on SIGHUP; a script added to lxc.d
later is run without a reload only if libvirt already had an lxc hook. The
module therefore reloads libvirtd (SIGHUP) when it installs the hook the
first time.

The hook is plain Python 3 from the standard library: the module copies
this file and what it imports (common.shipped.closure) to a directory of its
own, LIB_ROOT/hook-<digest>, and the hook script imports it from there with
the same absolute names (device.hook_script, device.plan_hook).
"""

from __future__ import annotations

import sys
import time
import xml.etree.ElementTree as ET

from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import cgroupfs, persist, rules
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

HOOK_DIR = "/etc/libvirt/hooks"
HOOK_NAME = "50-kiosk-cgroup-device"
LOG_FILE = "/var/log/libvirt/kiosk-cgroup-device.log"


def log(message: str, log_file: str = LOG_FILE) -> None:
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}\n"
    try:
        with open(log_file, "a", encoding="utf-8") as fh:
            fh.write(line)
    except OSError:
        sys.stderr.write(line)


def apply_domain_xml(name: str, xml_text: str, log_file: str = LOG_FILE, proc_devices: str = rules.PROC_DEVICES) -> int:
    """Apply the persistent rules in a domain XML to its cgroup; returns how many rules were written."""
    specs, problems = persist.specs_from_domain_xml(xml_text)
    for problem in problems:
        log(f"guest {name}: skipped a stored rule: {problem}", log_file)
    if not specs:
        return 0
    dom_id = ET.fromstring(xml_text).get("id")
    if not dom_id or not dom_id.isdigit():
        log(f"guest {name}: the domain XML has no id (controller pid); nothing applied", log_file)
        return 0
    backend = cgroupfs.backend_for_pid(int(dom_id))
    majors = rules.read_proc_devices(proc_devices)
    wanted = []
    for spec in specs:
        try:
            wanted.extend(spec.resolve(majors))
        except KioskError as exc:
            log(f"guest {name}: skipped: {exc.msg}", log_file)
    written = 0
    for rule in rules.plan_allow(backend.read(), wanted, backend.key):
        try:
            backend.allow(rule)
            written += 1
            log(f"guest {name}: allowed '{rule}' in {backend.path}", log_file)
        except KioskError as exc:
            log(f"guest {name}: {exc.msg}", log_file)
    return written


def main(argv: list[str] | None = None, stdin=None, log_file: str = LOG_FILE) -> int:
    """The hook's entry point; always returns 0 so that a guest start never fails because of it."""
    argv = sys.argv if argv is None else argv
    try:
        if len(argv) < 3 or argv[2] != "started" or (len(argv) > 3 and argv[3] != "begin"):
            return 0
        xml_text = (stdin or sys.stdin).read()
        apply_domain_xml(argv[1], xml_text, log_file)
    except Exception as exc:  # a hook must never fail the guest's start
        log(f"guest {argv[1] if len(argv) > 1 else '?'}: hook error, nothing more applied: {exc!r}", log_file)
    return 0
