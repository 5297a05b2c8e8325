"""A kiosk as the collection left it before each daemon had its own directory: the real old code, from git.

Up to commit BASE, the libvirt hook and the hotplug agent shared one library,
<lib>/python. An upgrade test installs that layout with BASE's own installers
(its module_utils, taken from this checkout's history with `git archive` and
run by a fresh interpreter), then runs today's installers over it.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BASE = "d3bc3d16c254527ca65ec8c4d758f63370f8739c"  # the last commit with the shared <lib>/python


def old_collection(tmp_path: Path) -> Path:
    """BASE's module_utils under tmp_path/old, importable as ansible_collections.kiosk.lxc...; its root."""
    ran = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", BASE, "plugins/module_utils"],
        capture_output=True,
        check=False,
    )
    if ran.returncode != 0:
        pytest.skip(f"the upgrade test needs this checkout's git history (commit {BASE[:12]}): {ran.stderr.decode()}")
    root = tmp_path / "old"
    dst = root / "ansible_collections" / "kiosk" / "lxc"
    dst.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(ran.stdout)) as tar:
        tar.extractall(dst, filter="data")
    return root


def run_old(root: Path, code: str) -> str:
    """Run `code` with BASE's collection (and nothing of this checkout) on the path; its stdout."""
    prelude = f"import sys\nsys.path.insert(0, {str(root)!r})\n"
    ran = subprocess.run([sys.executable, "-I", "-c", prelude + code], capture_output=True, text=True, check=False)
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def install_old_hook(root: Path, hook_dir: str, lib_root: str, python: str) -> None:
    run_old(
        root,
        "from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import device\n"
        f"host = device.Host(hook_dir={hook_dir!r}, lib_dir={lib_root + '/python'!r}, python={python!r},"
        f" pidfiles=(), libvirt_socket={lib_root + '/no-libvirtd'!r})\n"
        "assert device.run_hook(False, host)['changed']\n",
    )


def install_old_agent(root: Path, host, params: dict, start: bool) -> None:
    """BASE's hotplug_agent install on `host`'s paths (lib_dir as the root); started as its daemon if `start`."""
    run_old(
        root,
        "from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import hook\n"
        "from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug import install\n"
        f"host = install.Host(run=None, lib_dir={host.lib_dir + '/python'!r}, script={host.script!r},"
        f" unit={host.unit!r}, pidfile={host.pidfile!r}, systemd={host.systemd!r})\n"
        f"params = {params!r}\n"
        + (
            "assert install.run(params, False, host)['running']\n"
            if start
            else "files = install.wanted_files(params, host)\nhook.install(files, list(files))\n"
        ),
    )
