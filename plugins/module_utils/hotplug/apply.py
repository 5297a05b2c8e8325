# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Carrying out one attach/detach action of the plan in one running guest.

- Device cgroup: cgroup_device's own code (cgroup.cgroupfs finds the
  guest's v1 directory or v2 BPF map from libvirt's controller pid,
  cgroup.rules plans the writes). A card's nodes are allowed one by one
  (c MAJOR:MINOR rw), so another card on the same major stays closed.
- Device nodes: made from the host through /proc/<guest init>/root (mknod
  inside a guest is denied), unless the guest's /dev/snd is a live bind of
  the host's, where the host's own nodes come and go by themselves. That
  path is the guest's: it is resolved with common.guestfs (openat2, no link
  followed) and the nodes are made, owned and removed relative to the fd of
  the guest's /dev/snd, which must be a directory owned by root.
- Sound server: only a server hotplug.guests accepts strictly (the
  guest's pid namespace and cgroup, the kiosk user's uid, a bounded number
  looked at). The guest's own pactl/systemctl runs with nsenter into the
  server process's namespaces, as its user, with its runtime directory,
  and inside the cgroups of the guest's init (hotplug.guestrun: joined
  before nsenter runs, so the guest's device rules and memory limit
  apply), each command bounded and ended with all it started. All the
  commands of one action in one guest share SERVER_BUDGET seconds: a guest
  whose server never answers costs the others at most that.
"""

from __future__ import annotations

import os
import re
import stat
import time

from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import cgroupfs, rules
from ansible_collections.kiosk.lxc.plugins.module_utils.common import guestfs
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug import guestrun
from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug import guests as guestlib
from ansible_collections.kiosk.lxc.plugins.module_utils.sound import udevdata

GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SERVER_BUDGET = 6.0  # seconds for all sound server commands of one action in one guest
SND_SHOWN = "/dev/snd in the guest"
_MODULE_LINE_RE = re.compile(r"^(\d+)\s+module-alsa-card\s+(.*)$")
_DEVICE_ID_RE = re.compile(r"""\bdevice_id=["']?(\d+)["']?""")


# ---------------------------------------------------------------- device cgroup
def _node_rules(nodes: list[dict], access: str) -> list[rules.Rule]:
    return [rules.Rule("c", n["major"], n["minor"], access) for n in nodes]


def _with_backend(pid: int, work):
    backend = cgroupfs.backend_for_pid(pid)
    try:
        return work(backend)
    finally:
        if hasattr(backend, "close"):
            backend.close()


def grant(pid: int, nodes: list[dict], shared: list[dict]) -> tuple[list[rules.Rule], list[dict], str]:
    """Allow the card's nodes and the shared ones; (rules written, shared nodes granted, cgroup path)."""

    def work(backend):
        current = backend.read()
        granted_shared = [n for n in shared if rules.plan_allow(current, _node_rules([n], "rw"), backend.key)]
        written = []
        for rule in rules.plan_allow(current, _node_rules(nodes + granted_shared, "rw"), backend.key):
            backend.allow(rule)
            written.append(rule)
        return written, granted_shared, backend.path

    return _with_backend(pid, work)


def undo_grant(pid: int, written: list[rules.Rule]) -> None:
    """Take back exactly the rules an attach wrote (it failed later on)."""

    def work(backend):
        for rule in written:
            backend.deny(rule)

    _with_backend(pid, work)


def _rules_step(verb: str, written: list[rules.Rule], path: str) -> str:
    return f"{verb} {', '.join(repr(str(r)) for r in written)} in {path}"


def revoke(pid: int, nodes: list[dict], shared: list[dict]) -> list[str]:
    """Take every access to the card's nodes (and the given shared nodes) away; the step done, if any."""

    def work(backend):
        current = backend.read()
        written = []
        for rule in rules.plan_deny(current, _node_rules(nodes + shared, "rwm"), backend.key):
            backend.deny(rule)
            written.append(rule)
        return [_rules_step("deny", written, backend.path)] if written else []

    return _with_backend(pid, work)


# ---------------------------------------------------------------- nodes in the guest
def _guest_snd(init: int, create: bool) -> int | None:
    """An fd of the guest's /dev/snd, resolved inside the guest's root (common.guestfs), or None if missing.

    A link on the way is refused, and so is a /dev/snd not owned by host
    root: libvirt makes it root's, and one the guest's root made (under an
    idmap, a uid of the guest's range) is the guest's to play with.
    """
    with guestfs.root_fd(f"/proc/{init}/root") as rfd:
        fd = guestfs.open_dir(rfd, "dev/snd", create=create, mode=0o755, uid=0, gid=0, shown=SND_SHOWN)
    if fd is not None and os.fstat(fd).st_uid != 0:
        uid = os.fstat(fd).st_uid
        os.close(fd)
        raise guestfs.GuestPathError(f"{SND_SHOWN}: owned by uid {uid}, not root; refused", path=SND_SHOWN)
    return fd


def _is_live_bind(snd_fd: int, dev_dir: str) -> bool:
    """Whether the guest's /dev/snd is the host's own snd directory (a bind), so nodes appear by themselves."""
    try:
        ours = os.stat(os.path.join(dev_dir, "snd"))
    except OSError:
        return False
    theirs = os.fstat(snd_fd)
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def _char_at(snd_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=snd_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _own_node(snd_fd: int, name: str, rdev: int, *, mode: int, uid: int, gid: int) -> None:
    """Owner and mode of the node just made, set on that very inode (an O_PATH fd: no link, no race)."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=snd_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISCHR(st.st_mode) or st.st_rdev != rdev:
            raise guestfs.GuestPathError(f"/dev/snd/{name} in the guest: replaced while it was made; refused")
        os.chown(f"/proc/self/fd/{fd}", uid, gid)
        os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)


def make_nodes(init: int, nodes: list[dict], dev_dir: str) -> list[str]:
    """The nodes in the guest's /dev/snd, owned and moded like the host's (ids through the guest's map).

    Every step works on a directory fd of the guest's /dev/snd: nothing the
    guest planted there (links, a /dev/snd that is a link) is followed.
    """
    snd = _guest_snd(init, create=False)
    if snd is not None and _is_live_bind(snd, dev_dir):
        os.close(snd)
        return []
    if snd is None:
        snd = _guest_snd(init, create=True)
    made = []
    try:
        for node in nodes:
            name = node["name"]
            rdev = os.makedev(node["major"], node["minor"])
            st = _char_at(snd, name)
            if st is not None:
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == rdev:
                    continue
                os.unlink(name, dir_fd=snd)  # a link or a file the guest put there: the entry itself goes
            try:
                host = os.stat(node["path"])
                mode, uid, gid = stat.S_IMODE(host.st_mode), host.st_uid, host.st_gid
            except OSError:
                mode, uid, gid = 0o660, 0, 0
            os.mknod(name, 0o600 | stat.S_IFCHR, rdev, dir_fd=snd)
            _own_node(
                snd,
                name,
                rdev,
                mode=mode,
                uid=guestlib.map_id(uid, f"/proc/{init}/uid_map", inward=False),
                gid=guestlib.map_id(gid, f"/proc/{init}/gid_map", inward=False),
            )
            made.append(f"mknod /dev/snd/{name} in the guest")
    finally:
        os.close(snd)
    return made


def remove_nodes(init: int, nodes: list[dict], dev_dir: str) -> list[str]:
    """The nodes the agent made in the guest, removed (a live bind is left to the host)."""
    snd = _guest_snd(init, create=False)
    if snd is None:
        return []
    removed = []
    try:
        if _is_live_bind(snd, dev_dir):
            return []
        for node in nodes:
            st = _char_at(snd, node["name"])
            if st is not None and stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(node["major"], node["minor"]):
                os.unlink(node["name"], dir_fd=snd)
                removed.append(f"remove /dev/snd/{node['name']} in the guest")
    finally:
        os.close(snd)
    return removed


# ---------------------------------------------------------------- sound server
def in_guest(server: dict, argv: list[str], proc: str = "/proc") -> list[str]:
    """argv run in the sound server's namespaces, as its user, with its runtime environment."""
    pid = server["pid"]
    cmd = ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w"]
    if guestlib.ns_link(pid, "cgroup", proc) != guestlib.ns_link(os.getpid(), "cgroup", proc):
        cmd.append("-C")
    uid, gid = server["uid"], server["gid"]
    if guestlib.ns_link(pid, "user", proc) != guestlib.ns_link(os.getpid(), "user", proc):
        cmd.append("-U")
        uid = guestlib.map_id(uid, f"{proc}/{pid}/uid_map", inward=True)
        gid = guestlib.map_id(gid, f"{proc}/{pid}/gid_map", inward=True)
    cmd += ["-S", str(uid), "-G", str(gid), "--", "env", f"PATH={GUEST_PATH}"]
    cmd += [f"{k}={v}" for k, v in sorted(server["env"].items())]
    return cmd + argv


def server_commands(server: dict, op: str, card: dict) -> list[list[str]]:
    """The commands that tell one sound server about the card (the first that fails falls back)."""
    user = ["--user"] if server["uid"] != 0 else []
    if server["kind"] == "pulseaudio":
        if op == "attach":
            label = re.sub(r"[^A-Za-z0-9_.-]", "_", card.get("id") or f"card{card['number']}")
            return [
                [
                    "pactl",
                    "load-module",
                    "module-alsa-card",
                    f"device_id={card['number']}",
                    f"name=kiosk-{label}",
                    f"card_name=alsa_card.kiosk-{label}",
                    "tsched=yes",
                ]
            ]
        return [["pactl", "list", "modules", "short"]]
    # PipeWire: WirePlumber's ALSA monitor follows udev, which a guest does not get.
    return [["systemctl", *user, "restart", "wireplumber.service"]]


def fallback_command(server: dict) -> list[str]:
    user = ["--user"] if server["uid"] != 0 else []
    unit = "pulseaudio.service" if server["kind"] == "pulseaudio" else "pipewire.service"
    return ["systemctl", *user, "restart", unit]


def alsa_card_modules(listing: str, number: int) -> list[str]:
    """Indexes of module-alsa-card instances for card `number` in `pactl list modules short`."""
    found = []
    for line in listing.splitlines():
        m = _MODULE_LINE_RE.match(line.strip())
        if m:
            dev = _DEVICE_ID_RE.search(m.group(2))
            if dev and int(dev.group(1)) == number:
                found.append(m.group(1))
    return found


def find_servers(init: int, controller: int, user: str, proc: str = "/proc") -> tuple[list[dict], list[str]]:
    """The guest's sound servers as hotplug.guests accepts them, and a step saying what was left out."""
    uid = guestlib.kiosk_uid(init, user, proc)
    if uid is None:
        return [], [f"no user '{user}' in the guest: no sound server told"]
    found = guestlib.sound_servers(init, uid, cgroupfs.cgroup_of_pid(controller, proc), proc)
    notes = []
    if found["passed"]:
        notes.append(f"{found['passed']} more processes named like a sound server not looked at")
    return found["servers"], notes


def tell_servers(
    init: int, op: str, card: dict, servers: list[dict], run=guestrun.run, *, proc: str = "/proc", budget=SERVER_BUDGET
) -> list[str]:
    """Tell each server; the steps done. A server that refuses is restarted; all of it within `budget` seconds."""
    done = []
    deadline = time.monotonic() + budget

    def bounded(server: dict, argv: list[str]):
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        return run(init, in_guest(server, argv, proc), min(guestrun.COMMAND_TIMEOUT, left))

    for server in servers:
        who = f"{server['kind']} (pid {server['pid']})"
        ok = True
        for argv in server_commands(server, op, card):
            answer = bounded(server, argv)
            if answer is None:
                break
            rc, out, err = answer
            if rc != 0:
                ok = False
                done.append(f"{who}: {' '.join(argv)} failed: {(err or out).strip()[:200]}")
                break
            if argv[:2] == ["pactl", "list"]:
                for index in alsa_card_modules(out, card["number"]):
                    answer = bounded(server, ["pactl", "unload-module", index])
                    if answer is None:
                        break
                    rc, out, err = answer
                    ok = ok and rc == 0
                    done.append(f"{who}: unload-module {index}" + ("" if rc == 0 else f" failed: {err.strip()}"))
            else:
                done.append(f"{who}: {' '.join(argv)}")
        answer = None if ok else bounded(server, fallback_command(server))
        if answer is not None:
            rc, out, err = answer
            argv = fallback_command(server)
            done.append(f"{who}: {' '.join(argv)}" + ("" if rc == 0 else f" failed: {(err or out).strip()[:200]}"))
        if time.monotonic() >= deadline:
            done.append(f"sound servers: {budget:g} s spent, the rest not told")
            break
    return done


# ---------------------------------------------------------------- the guest's udev data
def guest_udev(action: dict) -> list[str]:
    """The card's udev records added to (attach) or removed from (detach) the guest's own udev data.

    Only for a guest whose /run/udev is its own directory (sound_passthrough,
    profile udev_data); written by sound.udevdata, which follows no link on
    the way to that host directory.
    """
    if not action.get("udev_dir"):
        return []
    change = {"path": action["udev_dir"], "write": {}, "remove": []}
    if action["op"] == "attach":
        change["write"] = udevdata.records([action["card"]], action["shared"])
    else:
        change["remove"] = udevdata.card_ids(action["card"], action["shared"])
    return udevdata.apply(change)


# ---------------------------------------------------------------- one action
def apply_action(
    action: dict, dev_dir: str = "/dev", run=guestrun.run, user: str = "kiosk"
) -> tuple[list[str], list[dict], dict]:
    """Carry out one plan action; (steps done, shared nodes granted, seconds per part). KioskError/OSError on failure.

    The parts: `device` (device cgroup and nodes: the guest can open the card
    after it) and `server` (telling the guest's sound servers).
    """
    start = time.monotonic()
    init = guestlib.init_pid(action["pid"])
    if init is None:
        raise KioskError(f"Guest '{action['guest']}': no init process under controller {action['pid']}")
    steps: list[str] = []
    if action["op"] == "attach":
        written, shared, path = grant(action["pid"], action["nodes"], action["shared"])
        steps += [_rules_step("allow", written, path)] if written else []
        try:
            steps += make_nodes(init, action["nodes"] + action["shared"], dev_dir)
        except (OSError, KioskError):
            undo_grant(action["pid"], written)  # a failed attach (a refused /dev/snd too) leaves the guest as it was
            raise
        steps += guest_udev(action)
        device = time.monotonic()
        servers, notes = find_servers(init, action["pid"], user)
        steps += notes + tell_servers(init, "attach", action["card"], servers, run)
        return steps, shared, {"device": device - start, "server": time.monotonic() - device}
    steps += revoke(action["pid"], action["nodes"], action["shared"])
    steps += remove_nodes(init, action["nodes"] + action["shared"], dev_dir)
    steps += guest_udev(action)
    device = time.monotonic()
    servers, notes = find_servers(init, action["pid"], user)
    steps += notes + tell_servers(init, "detach", action["card"], servers, run)
    return steps, [], {"device": device - start, "server": time.monotonic() - device}
