# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kiosk.lxc.guests inventory plugin's logic: kiosks in, one inventory host per guest out.

Plain Python, no ansible imports (the plugin in plugins/inventory/guests.py
is the thin Ansible side: options, cache, adding hosts and groups).

- `kiosk_target(name, hostvars, ...)`: how to reach one kiosk's libvirtd -
  lxc:///system when the kiosk is this machine (ansible_connection local),
  lxc+ssh://USER@HOST[:PORT]/system otherwise.
- `list_guests(conn, leases_dir)`: lxc_domain_info's facts for every guest
  (state, interfaces with the IPs leased by the bridge's dnsmasq, metadata)
  plus the sound_passthrough card selectors from SOUND_NS metadata.
- For a remote kiosk the lease files live on the kiosk: `fetch_leases()`
  copies them over SSH into a local directory first, so the very same lease
  reader (lxc_bridge's) reads them.
- `guest_hosts(kiosk, guests, ...)`: the hosts to add, their variables and
  groups (by kiosk, by state, by assigned card).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess

from ansible_collections.kiosk.lxc.plugins.module_utils.common import virt
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.common.virt import libvirt
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import info, xmldef
from ansible_collections.kiosk.lxc.plugins.module_utils.sound import plan as soundplan

LOCAL_URI = virt.DEFAULT_URI
REMOTE_URI = "lxc+ssh://{user}@{host}{port}/system"
DEFAULT_HOSTNAME = "{guest}.{kiosk}"
_GROUP_RE = re.compile(r"[^A-Za-z0-9_]")
# The remote side of fetch_leases: NUL-separated "name", "content" pairs.
_LEASES_SCRIPT = (
    'cd {dir} 2>/dev/null || exit 0; for f in *.leases; do [ -f "$f" ] || continue; '
    "printf '%s\\0' \"$f\"; cat -- \"$f\"; printf '\\0'; done"
)


def group_name(*parts: str) -> str:
    """A group name Ansible accepts: parts joined by '_', other characters as '_'."""
    return _GROUP_RE.sub("_", "_".join(p for p in parts if p))


def kiosk_target(name: str, hostvars: dict, *, default_user: str = "root") -> dict:
    """{uri, local, ssh (user@host, port or None)} for one kiosk host."""
    if hostvars.get("ansible_connection") == "local":
        return {"uri": LOCAL_URI, "local": True, "ssh": None, "port": None}
    host = str(hostvars.get("ansible_host") or name)
    user = str(hostvars.get("ansible_user") or default_user)
    port = hostvars.get("ansible_port")
    uri = REMOTE_URI.format(user=user, host=host, port=f":{port}" if port else "")
    return {"uri": uri, "local": False, "ssh": f"{user}@{host}", "port": port}


def ssh_argv(target: dict, command: str) -> list[str]:
    argv = ["ssh", "-o", "BatchMode=yes"]
    if target.get("port"):
        argv += ["-p", str(target["port"])]
    return [*argv, target["ssh"], command]


def parse_lease_bundle(data: bytes) -> dict[str, str]:
    """{file name: content} from the NUL-separated output of _LEASES_SCRIPT."""
    parts = data.split(b"\0")
    out = {}
    for i in range(0, len(parts) - 1, 2):
        name = os.path.basename(parts[i].decode("utf-8", "replace").strip())
        if name.endswith(".leases"):
            out[name] = parts[i + 1].decode("utf-8", "replace")
    return out


def fetch_leases(target: dict, leases_dir: str, into: str, run=subprocess.run) -> list[str]:
    """Copy the kiosk's <bridge>.leases files into the local directory `into`; their names."""
    command = _LEASES_SCRIPT.format(dir=shlex.quote(leases_dir))
    try:
        proc = run(ssh_argv(target, command), capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KioskError(f"cannot read the lease files over SSH from {target['ssh']}: {exc}") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise KioskError(f"cannot read the lease files over SSH from {target['ssh']}: {err or proc.returncode}")
    files = parse_lease_bundle(proc.stdout)
    for name, content in files.items():
        with open(os.path.join(into, name), "w", encoding="utf-8") as fh:
            fh.write(content)
    return sorted(files)


def list_guests(conn, leases_dir: str = info.DEFAULT_LEASES_DIR) -> list[dict]:
    """lxc_domain_info's facts of every guest, each with `sound` (selectors, profile) or None."""
    guests = info.gather(conn, leases_dir=leases_dir)["guests"]
    for guest in guests:
        guest["sound"] = None
        try:
            xml = conn.lookupByName(guest["name"]).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        except libvirt.libvirtError:
            continue  # undefined since it was listed
        sound = soundplan.read_metadata(xmldef.parse(xml))
        if sound is not None:
            guest["sound"] = {"profile": sound["profile"], "selectors": sound["selectors"]}
    return guests


def query_kiosk(name: str, hostvars: dict, leases_dir: str, *, tmp_dir: str, run=subprocess.run) -> list[dict]:
    """Every guest of one kiosk (see list_guests); KioskError when the kiosk cannot be read."""
    target = kiosk_target(name, hostvars)
    try:
        if not target["local"]:
            fetch_leases(target, leases_dir, tmp_dir, run=run)
            leases_dir = tmp_dir
        with virt.connection(target["uri"]) as conn:
            return list_guests(conn, leases_dir)
    except KioskError as exc:
        raise KioskError(f"Kiosk {name}: {exc.msg}") from exc


def card_groups(sound: dict | None) -> list[str]:
    """card_<key>_<value>... per selector; card_all when the guest takes every card."""
    if not sound:
        return []
    if sound["selectors"] is None:
        return ["card_all"]
    return [group_name("card", *(f"{k}_{v}" for k, v in sorted(sel.items()))) for sel in sound["selectors"]]


def address(guest: dict) -> str | None:
    """The first leased IP of a running guest (None when stopped or without a lease)."""
    if guest["state"] != "running":
        return None
    for iface in guest["interfaces"]:
        if iface.get("ips"):
            return iface["ips"][0]
    return None


def guest_hosts(
    kiosk: str,
    kiosk_hostvars: dict,
    guests: list[dict],
    *,
    hostname: str = DEFAULT_HOSTNAME,
    proxy_jump: bool = True,
) -> list[dict]:
    """[{name, vars, groups}] for the guests of one kiosk."""
    target = kiosk_target(kiosk, kiosk_hostvars)
    out = []
    for guest in guests:
        hostvars = dict(guest["metadata"])
        hostvars["kiosk_guest"] = {**guest, "kiosk": kiosk}
        hostvars["kiosk_guest_kiosk"] = kiosk
        ip = address(guest)
        if ip:
            hostvars["ansible_host"] = ip
        if proxy_jump and not target["local"]:
            jump = target["ssh"] + (f":{target['port']}" if target["port"] else "")
            hostvars["ansible_ssh_common_args"] = f"-o ProxyJump={jump}"
        groups = [group_name("kiosk", kiosk), group_name("state", guest["state"]), *card_groups(guest["sound"])]
        out.append(
            {
                "name": hostname.format(guest=guest["name"], kiosk=kiosk),
                "vars": hostvars,
                "groups": groups,
            }
        )
    return out
