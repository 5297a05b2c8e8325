# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""kiosk.lxc.hotplug_agent: install the agent and keep it running (read -> desired -> plan -> apply).

The agent's code is agent.py's import closure over this collection's
module_utils (common.shipped), copied with the same absolute names to a
directory of its own, LIB_ROOT/agent-<digest> - the way the cgroup_device
hook ships in LIB_ROOT/hook-<digest> - plus a start script that names that
directory and runs the agent with the host's /usr/bin/python3. Where systemd
runs, a unit starts it at boot and restarts it; elsewhere the module starts
it as a daemon with a pid file (nothing restarts it after a reboot there
until the host role runs again). A change of the agent's own files (its
directory, script or unit) restarts a running agent, so the new code or
options take effect; the hook's files are no concern of it. A running agent
older than any of its own files (their mtime after the process's start: a
run that wrote them and then failed to restart it) is restarted even when
this module finds every file as it wants it. The old directory goes after
the restart.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field

from ansible_collections.kiosk.lxc.plugins.module_utils.common import shipped, text
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.host import preflight

# The entry point: imported, so that AnsiballZ packs it and what it imports into the module's payload.
from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug import agent

NAME = "kiosk-lxc-hotplug"
SCRIPT = f"/usr/local/sbin/{NAME}"
UNIT = f"/etc/systemd/system/{NAME}.service"
PIDFILE = f"/run/{NAME}.pid"
START_TIMEOUT = 10.0


@dataclass
class Host:
    """Where things go; tests hand in their own."""

    run: object = None
    lib_dir: str = shipped.LIB_ROOT
    # The launchers that may still name the old shared library (lib_dir/python); it goes when none does.
    legacy_launchers: tuple = shipped.LEGACY_LAUNCHERS
    script: str = SCRIPT
    unit: str = UNIT
    pidfile: str = PIDFILE
    systemd: bool = field(default_factory=preflight.systemd_running)


def agent_args(params: dict) -> list[str]:
    args = ["--uri", params["uri"], "--rescan", str(params["rescan"])]
    if params.get("kiosk_user", agent.KIOSK_USER) != agent.KIOSK_USER:
        args += ["--kiosk-user", params["kiosk_user"]]
    if params.get("log_file"):
        args += ["--log-file", params["log_file"]]
    return args


def script_text(python: str, lib_dir: str, args: list[str]) -> str:
    return (
        f"#!{python}\n"
        "# Installed by kiosk.lxc.hotplug_agent: hands hot-plugged sound cards to the running\n"
        "# libvirt LXC guests whose sound_passthrough selectors choose them.\n"
        "import sys\n"
        "sys.dont_write_bytecode = True\n"
        f"sys.path.insert(0, {lib_dir!r})\n"
        f"from {agent.__name__} import main\n"
        f"sys.exit(main({args!r} + sys.argv[1:]))\n"
    )


def unit_text(script: str) -> str:
    """The unit: the agent comes back after ANY exit (also a clean one, after a stray SIGTERM), never giving up.

    With Restart=on-failure an agent that exited cleanly stayed inactive until the host role ran again,
    and that run then reported changed (it had to start it).
    """
    return (
        "# Installed by kiosk.lxc.hotplug_agent.\n"
        "[Unit]\n"
        "Description=kiosk.lxc sound card hotplug agent for libvirt LXC guests\n"
        "After=libvirtd.service systemd-udevd.service\n"
        "Wants=libvirtd.service\n"
        "StartLimitIntervalSec=0\n\n"
        "[Service]\n"
        f"ExecStart={shlex.quote(script)}\n"
        "Restart=always\n"
        "RestartSec=2\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def wanted_files(params: dict, host: Host, tree: shipped.Tree) -> dict[str, tuple[str, int]]:
    """The script (naming the agent's directory) and the unit: {path: (content, mode)}."""
    files = {host.script: (script_text(params["python"], tree.path, agent_args(params)), 0o755)}
    if host.systemd:
        files[host.unit] = (unit_text(host.script), 0o644)
    return files


def plan_tree(host: Host) -> shipped.Tree:
    return shipped.plan_tree(host.lib_dir, "agent", shipped.tree(agent.__name__))


def owned_paths(host: Host) -> list[str]:
    return [p for p in (host.script, host.unit, *shipped.installed(host.lib_dir, "agent")) if os.path.lexists(p)]


# ---------------------------------------------------------------- running state
def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on: the command name, which may hold spaces, cut off."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie, not yet reaped by its parent, does not)."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] != "Z"


def daemon_pid(host: Host) -> int | None:
    """The pid of the agent started without systemd, when it still runs."""
    try:
        with open(host.pidfile, encoding="ascii") as fh:
            pid = int(fh.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if host.script.encode() in cmdline and alive(pid) else None


def _systemctl(host: Host, *args: str) -> tuple[int, str, str]:
    return host.run(["systemctl", *args])


def is_running(host: Host) -> bool:
    if host.systemd:
        return _systemctl(host, "is-active", "--quiet", f"{NAME}.service")[0] == 0
    return daemon_pid(host) is not None


def agent_pid(host: Host) -> int | None:
    """The running agent's pid: systemd's main pid of the unit, or the daemon's."""
    if not host.systemd:
        return daemon_pid(host)
    rc, out, _err = _systemctl(host, "show", "--property=MainPID", "--value", f"{NAME}.service")
    pid = int(out.strip()) if rc == 0 and out.strip().isdigit() else 0
    return pid or None


def started_at(pid: int) -> float | None:
    """When the process started, as a wall-clock time (to the kernel's clock tick)."""
    fields = _stat_fields(pid)
    try:
        ticks = int(fields[19])  # field 22: starttime, ticks since boot
    except (TypeError, IndexError, ValueError):
        return None
    since_boot = ticks / os.sysconf("SC_CLK_TCK")
    return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - since_boot)


def newer_than_agent(host: Host) -> list[str]:
    """The agent's own files changed on disk since the running agent started (it runs older code).

    Its script, unit and the files of the directory the script names; the hook's are no concern of it.
    """
    pid = agent_pid(host)
    start = started_at(pid) if pid else None
    if start is None:
        return []
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    paths = [host.script, host.unit]
    script = shipped.read_text(host.script) or ""
    lib = next((p for p in shipped.installed(host.lib_dir, "agent") if repr(p) in script), None)
    if lib is not None:
        paths += sorted(os.path.join(root, n) for root, _dirs, names in os.walk(lib) for n in names)
    newer = []
    for path in paths:
        try:
            if os.stat(path).st_mtime > start + tick:
                newer.append(path)
        except OSError:
            continue
    return newer


def is_enabled(host: Host) -> bool:
    return not host.systemd or _systemctl(host, "is-enabled", "--quiet", f"{NAME}.service")[0] == 0


# ---------------------------------------------------------------- the four steps
def validate(params: dict) -> dict:
    if params["state"] not in ("present", "absent"):
        raise KioskError(f"Option state: {params['state']!r} is not one of present, absent")
    if params["rescan"] <= 0:
        raise KioskError(f"Option rescan: {params['rescan']} must be more than 0 seconds")
    text.fullmatch("Option kiosk_user", params.get("kiosk_user", agent.KIOSK_USER), agent.USER_RE, "is not a user name")
    if params["state"] == "present" and not os.access(params["python"], os.X_OK):
        raise KioskError(f"Option python: {params['python']} is not an executable Python interpreter")
    return params


def read(host: Host) -> dict:
    running = is_running(host)
    return {
        "running": running,
        "enabled": is_enabled(host),
        "present": owned_paths(host),
        "newer": newer_than_agent(host) if running else [],
    }


def plan(params: dict, current: dict, host: Host) -> dict:
    """What to write, run and remove, in that order: the old directories go once the new agent runs."""
    if params["state"] == "absent":
        steps = []
        if current["running"]:
            steps.append("stop")
        if host.systemd and current["enabled"] and os.path.exists(host.unit):
            steps.append("disable")
        remove = current["present"] + shipped.legacy_unused(host.lib_dir, host.legacy_launchers, {host.script: None})
        return {"tree": None, "files": {}, "install": [], "remove": remove, "steps": steps}
    tree = plan_tree(host)
    files = wanted_files(params, host, tree)
    install = shipped.plan_files(files)
    steps = []
    if host.systemd:
        if host.unit in install:
            steps.append("daemon-reload")
        if not current["enabled"] or host.unit in install:
            steps.append("enable")
    if current["running"] and (tree.write or install or current.get("newer")):
        steps.append("restart")
    elif not current["running"]:
        steps.append("start")
    after = {host.script: files[host.script][0]}
    remove = tree.remove + shipped.legacy_unused(host.lib_dir, host.legacy_launchers, after)
    return {"tree": tree, "files": files, "install": install, "remove": remove, "steps": steps}


def actions_of(result: dict) -> list[str]:
    tree = result["tree"]
    actions = [f"{tree.write.replace('create', 'install')} {tree.path}"] if tree is not None and tree.write else []
    actions += [f"install {p}" for p in result["install"]]
    actions += [f"{step} {NAME}" for step in result["steps"]]
    return actions + [f"remove {p}" for p in result["remove"]]


def _start_daemon(host: Host) -> None:
    subprocess.Popen(
        [host.script, "--pidfile", host.pidfile],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if daemon_pid(host) is not None:
            return
        time.sleep(0.05)
    raise KioskError(f"The hotplug agent {host.script} did not start within {START_TIMEOUT:.0f} s; see its log")


def _stop_daemon(host: Host) -> None:
    pid = daemon_pid(host)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(host.pidfile)


def _systemd_step(host: Host, step: str) -> None:
    argv = {
        "daemon-reload": ["daemon-reload"],
        "enable": ["enable", f"{NAME}.service"],
        "disable": ["disable", f"{NAME}.service"],
        "start": ["start", f"{NAME}.service"],
        "stop": ["stop", f"{NAME}.service"],
        "restart": ["restart", f"{NAME}.service"],
    }[step]
    rc, out, err = _systemctl(host, *argv)
    if rc != 0:
        raise KioskError(f"systemctl {' '.join(argv)} failed: {(err or out).strip()}")


def apply(result: dict, host: Host) -> None:
    if "stop" in result["steps"]:
        if host.systemd:
            _systemd_step(host, "stop")
        else:
            _stop_daemon(host)
    if "disable" in result["steps"]:
        _systemd_step(host, "disable")
    if result["tree"] is not None:
        shipped.write_tree(result["tree"])
    shipped.write_files(result["files"], result["install"], "the hotplug agent")
    for step in ("daemon-reload", "enable", "restart", "start"):
        if step not in result["steps"]:
            continue
        if host.systemd:
            _systemd_step(host, step)
        else:
            if step == "restart":
                _stop_daemon(host)
            _start_daemon(host)
    for path in result["remove"]:
        if os.path.isdir(path) and not os.path.islink(path):
            shipped.remove_trees([path])
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def run(params: dict, check_mode: bool, host: Host) -> dict:
    params = validate(params)
    current = read(host)
    result = plan(params, current, host)
    if not check_mode:
        apply(result, host)
    actions = actions_of(result)
    present = params["state"] == "present"
    after = sorted([result["tree"].path, *result["files"]]) if present else []
    before = sorted(set(current["present"]) | set(result["remove"]))
    return {
        "changed": bool(actions),
        "actions": actions,
        "service": "systemd" if host.systemd else "daemon",
        "running": present,
        "diff": {
            "before": f"running: {current['running']}\nfiles: {', '.join(before) or 'none'}\n"
            + (f"changed since the agent started: {', '.join(current['newer'])}\n" if current["newer"] else ""),
            "after": f"running: {present}\nfiles: {', '.join(after) or 'none'}\n",
            "before_header": NAME,
            "after_header": NAME,
        },
    }
