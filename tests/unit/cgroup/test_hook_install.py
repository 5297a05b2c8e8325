"""The libvirt hook's install: its own directory (hook.py's import closure), the script naming it, upgrades.

Real files in tmp_path; the installed hook script is run as libvirt runs it. No
libvirtd answers on the tmp socket, so nothing is reloaded. The upgrade starts
from the layout the collection's previous installer (BASE, from git) wrote.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from agent_host import agent_host, hook_host, launchers
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import device, hook
from ansible_collections.kiosk.lxc.plugins.module_utils.common import shipped
from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug import install
from old_layout import install_old_agent, install_old_hook, old_collection

PARAMS = {"uri": "lxc:///system", "state": "present", "rescan": 5.0, "log_file": None, "python": "/usr/bin/python3"}


def run_hook_script(host) -> subprocess.CompletedProcess:
    """The installed script as libvirt runs it at a guest's start (no rules stored: nothing to write)."""
    return subprocess.run(
        [device.hook_path(host), "player1", "started", "begin", "-"],
        input="<domain type='lxc' id='1'><name>player1</name></domain>",
        capture_output=True,
        text=True,
        check=False,
    )


def files_under(path) -> dict[str, tuple[bytes, float]]:
    return {str(p): (p.read_bytes(), p.stat().st_mtime) for p in sorted(Path(path).rglob("*")) if p.is_file()}


def test_the_hook_gets_its_own_directory_and_a_second_run_changes_nothing(tmp_path):
    host = hook_host(tmp_path)
    check = device.run_hook(True, host)
    tree = shipped.plan_tree(host.lib_dir, "hook", shipped.tree(hook.__name__))
    assert check["actions"] == [f"install {tree.path}", f"install {device.hook_path(host)}"]
    assert not tmp_path.joinpath("lib").exists() and not tmp_path.joinpath("hooks").exists()
    real = device.run_hook(False, host)
    assert real["actions"] == check["actions"]
    assert Path(tree.path, shipped.relpath(hook.__name__)).read_text(encoding="utf-8") == Path(hook.__file__).read_text(
        encoding="utf-8"
    )
    script = Path(device.hook_path(host))
    assert f"sys.path.insert(0, {tree.path!r})" in script.read_text(encoding="utf-8")
    assert script.stat().st_mode & 0o777 == 0o755
    assert (run_hook_script(host).returncode, run_hook_script(host).stderr) == (0, "")
    assert device.run_hook(True, host)["changed"] is False
    assert device.run_hook(False, host)["changed"] is False
    script.chmod(0o644)
    assert device.run_hook(False, host)["actions"] == [f"install {script}"]


def test_a_new_version_of_the_hook_replaces_its_directory_and_leaves_the_agents_alone(tmp_path):
    host = hook_host(tmp_path)
    agent = agent_host(tmp_path, systemd=False)
    device.run_hook(False, host)
    tree = install.plan_tree(agent)
    shipped.write_tree(tree)
    shipped.write_files(install.wanted_files(PARAMS, agent, tree), [agent.script], "the agent")
    agent_files = files_under(tree.path)
    # The directory an older version of the hook used: named by another digest, the script naming it.
    current = shipped.plan_tree(host.lib_dir, "hook", shipped.tree(hook.__name__)).path
    old = Path(host.lib_dir, "hook-0123456789abcdef")
    os.rename(current, old)
    Path(device.hook_path(host)).write_text(device.hook_script(host.python, str(old)), encoding="utf-8")

    check = device.run_hook(True, host)
    assert check["actions"] == [f"install {current}", f"install {device.hook_path(host)}", f"remove {old}"]
    assert str(old) not in check["diff"]["after"] and str(old) in check["diff"]["before"]
    real = device.run_hook(False, host)
    assert real["actions"] == check["actions"]
    assert not old.exists() and Path(current).is_dir()
    assert run_hook_script(host).returncode == 0
    assert files_under(tree.path) == agent_files, "the hook's upgrade touched the agent's files"
    assert install.plan_tree(agent).write is None
    assert device.run_hook(False, host)["changed"] is False


def test_a_kiosk_installed_by_the_previous_layout_upgrades_the_hook_and_keeps_the_agents_library(tmp_path):
    """BASE's installers write the shared <lib>/python (hook and agent, not started here); today's hook
    installer moves the hook to its own directory and leaves the shared one, which the agent still runs from."""
    old = old_collection(tmp_path)
    host = hook_host(tmp_path)
    install_old_hook(old, host.hook_dir, host.lib_dir, host.python)
    install_old_agent(old, agent_host(tmp_path, systemd=False), PARAMS, start=False)
    legacy = Path(host.lib_dir, shipped.LEGACY)
    agent_script = Path(launchers(tmp_path)[1])
    assert repr(str(legacy)) in Path(device.hook_path(host)).read_text(encoding="utf-8")
    shared = files_under(legacy)
    assert run_hook_script(host).returncode == 0

    check = device.run_hook(True, host)
    tree = shipped.plan_tree(host.lib_dir, "hook", shipped.tree(hook.__name__))
    assert check["actions"] == [f"install {tree.path}", f"install {device.hook_path(host)}"]
    assert str(legacy) in check["diff"]["before"]
    assert device.run_hook(False, host)["actions"] == check["actions"]
    assert files_under(legacy) == shared and repr(str(legacy)) in agent_script.read_text(encoding="utf-8")
    assert (run_hook_script(host).returncode, run_hook_script(host).stderr) == (0, "")
    assert device.run_hook(False, host)["changed"] is False

    agent_script.unlink()  # the agent gone (its state=absent): the shared library has no user left
    gone = device.run_hook(False, host)
    assert gone["actions"] == [f"remove {legacy}"] and not legacy.exists()
    assert device.run_hook(False, host)["changed"] is False
