# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""kiosk.lxc.hotplug_agent: install the agent and keep it running (read -> desired -> plan -> apply).

The agent's code is this collection's own module_utils, copied to LIB_DIR
with the same absolute names - the way the cgroup_device hook ships (and
with its helpers: cgroup.hook.module_source/plan_install/install) - plus a
start script that runs it with the host's /usr/bin/python3. Where systemd
runs, a unit starts it at boot and restarts it; elsewhere the module starts
it as a daemon with a pid file (nothing restarts it after a reboot there
until the host role runs again). Any change of a file restarts a running
agent, so the new code or options take effect - also a change another task
made: the cgroup_device hook installs the device cgroup modules the agent
shares with it, so a running agent older than any of its files (their
mtime after the process's start) is restarted even when this module finds
every file as it wants it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass

from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import hook
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

# Imported only so that Ansible packs the agent's modules into the module's payload (module_source reads them).
from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug import agent as _agent  # noqa: F401

NAME = "kiosk-lxc-hotplug"
SCRIPT = f"/usr/local/sbin/{NAME}"
UNIT = f"/etc/systemd/system/{NAME}.service"
PIDFILE = f"/run/{NAME}.pid"
# What the agent imports, relative to hook.PACKAGE: the device cgroup code the hook ships too
# (without the hook's own persistence), and its own.
AGENT_MODULES = (
    *(m for m in hook.HOOK_MODULES if m not in ("cgroup.persist", "cgroup.hook")),
    "common.guestfs",
    "sound.select",
    "sound.discovery",
    "sound.plan",
    "hotplug.plan",
    "hotplug.guests",
    "hotplug.apply",
    "hotplug.agent",
)
# Removed with state=absent: what the cgroup hook does not need too.
OWN_MODULES = tuple(m for m in AGENT_MODULES if m not in hook.HOOK_MODULES)
START_TIMEOUT = 10.0


@dataclass
class Host:
    """Where things go; tests hand in their own."""

    run: object = None
    lib_dir: str = hook.LIB_DIR
    script: str = SCRIPT
    unit: str = UNIT
    pidfile: str = PIDFILE
    systemd: bool = os.path.isdir("/run/systemd/system")


def agent_args(params: dict) -> list[str]:
    args = ["--uri", params["uri"], "--rescan", str(params["rescan"])]
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
        f"from {hook.PACKAGE}.hotplug.agent import main\n"
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


def wanted_files(params: dict, host: Host) -> dict[str, tuple[str, int]]:
    files = {host.script: (script_text(params["python"], host.lib_dir, agent_args(params)), 0o755)}
    if host.systemd:
        files[host.unit] = (unit_text(host.script), 0o644)
    for relname in AGENT_MODULES:
        files[module_path(host, relname)] = (hook.module_source(relname), 0o644)
    return files


def module_path(host: Host, relname: str) -> str:
    return os.path.join(host.lib_dir, *hook.PACKAGE.split("."), *relname.split(".")) + ".py"


def owned_paths(host: Host) -> list[str]:
    return [host.script, host.unit, *(module_path(host, relname) for relname in OWN_MODULES)]


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
    """The agent's script and modules changed on disk since the running agent started (it runs older code)."""
    pid = agent_pid(host)
    start = started_at(pid) if pid else None
    if start is None:
        return []
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    paths = [host.script, *(module_path(host, relname) for relname in AGENT_MODULES)]
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
    if params["state"] == "present" and not os.access(params["python"], os.X_OK):
        raise KioskError(f"Option python: {params['python']} is not an executable Python interpreter")
    return params


def read(host: Host) -> dict:
    running = is_running(host)
    return {
        "running": running,
        "enabled": is_enabled(host),
        "present": [p for p in owned_paths(host) if os.path.lexists(p)],
        "newer": newer_than_agent(host) if running else [],
    }


def plan(params: dict, current: dict, host: Host) -> dict:
    if params["state"] == "absent":
        steps = []
        if current["running"]:
            steps.append("stop")
        if host.systemd and current["enabled"] and os.path.exists(host.unit):
            steps.append("disable")
        return {"files": {}, "install": [], "remove": current["present"], "steps": steps}
    files = wanted_files(params, host)
    install = hook.plan_install(files)
    steps = []
    if host.systemd:
        if host.unit in install:
            steps.append("daemon-reload")
        if not current["enabled"] or host.unit in install:
            steps.append("enable")
    if current["running"] and (install or current.get("newer")):
        steps.append("restart")
    elif not current["running"]:
        steps.append("start")
    return {"files": files, "install": install, "remove": [], "steps": steps}


def actions_of(result: dict) -> list[str]:
    actions = [f"install {p}" for p in result["install"]]
    actions += [f"remove {p}" for p in result["remove"]]
    return actions + [f"{step} {NAME}" for step in result["steps"]]


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
    for path in result["remove"]:
        os.unlink(path)
    if result["install"]:
        hook.install(result["files"], result["install"])
    for step in ("daemon-reload", "enable", "restart", "start"):
        if step not in result["steps"]:
            continue
        if host.systemd:
            _systemd_step(host, step)
        else:
            if step == "restart":
                _stop_daemon(host)
            _start_daemon(host)


def run(params: dict, check_mode: bool, host: Host) -> dict:
    params = validate(params)
    current = read(host)
    result = plan(params, current, host)
    if not check_mode:
        apply(result, host)
    actions = actions_of(result)
    present = params["state"] == "present"
    after = sorted(set(current["present"]) | set(result["install"]) if present else [])
    after = [p for p in after if p in owned_paths(host)]
    return {
        "changed": bool(actions),
        "actions": actions,
        "service": "systemd" if host.systemd else "daemon",
        "running": present,
        "diff": {
            "before": f"running: {current['running']}\nfiles: {', '.join(sorted(current['present'])) or 'none'}\n"
            + (f"changed since the agent started: {', '.join(current['newer'])}\n" if current["newer"] else ""),
            "after": f"running: {present}\nfiles: {', '.join(after) or 'none'}\n",
            "before_header": NAME,
            "after_header": NAME,
        },
    }
