"""What the host daemons ship: each one's import closure, complete, and installed in a directory of its own.

Real files throughout: the collection's own module_utils, copied into tmp_path
and imported there by a fresh interpreter (`python -I`, so nothing of this
checkout or of PYTHONPATH is on its path) the way the hook and the agent
import them on a kiosk.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common import shipped
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

REPO = Path(__file__).resolve().parents[3]
# Each daemon's entry point and what its module docs list as its host requirements (Python side).
DAEMONS = {
    "hook": (f"{shipped.PACKAGE}.cgroup.hook", ()),  # the standard library only
    "agent": (f"{shipped.PACKAGE}.hotplug.agent", ("libvirt", "lxml", "pyudev")),  # hotplug_agent: requirements
}

# Imports the entry point from the installed directory alone and says where every module came from.
IMPORT_ALONE = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
importlib.import_module(sys.argv[2])
print(json.dumps({n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())
                  if n.split(".")[0] in ("ansible", "ansible_collections")}))
"""


@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_every_module_a_daemon_runs_is_shipped_and_it_needs_only_what_its_docs_list(daemon, tmp_path):
    """The shipped-closure test: a new import in, say, sound/plan.py of Ansible, of another collection or of a
    package the kiosk lacks fails here (closure() raises naming the file and line, or `requires` grows); a new
    import of one of this collection's modules is shipped with it."""
    entry, allowed = DAEMONS[daemon]
    found = shipped.closure(entry)
    assert entry in found.modules
    assert set(found.requires) <= set(allowed), f"{daemon} imports {set(found.requires) - set(allowed)}"

    tree = shipped.plan_tree(str(tmp_path), daemon, shipped.tree(entry))
    shipped.write_tree(tree)
    ran = subprocess.run(
        [sys.executable, "-I", "-c", IMPORT_ALONE, tree.path, entry], capture_output=True, text=True, check=False
    )
    assert ran.returncode == 0, ran.stderr
    loaded = json.loads(ran.stdout)
    outside = {n: f for n, f in loaded.items() if f is not None and not f.startswith(f"{tree.path}/")}
    assert outside == {}, f"{daemon} loaded modules that are not in its directory"
    ours = {n for n, f in loaded.items() if f is not None}
    assert ours <= set(found.modules), "an import ast did not see (importlib at import time?)"


def test_the_hook_and_the_agent_ship_what_they_import_and_no_installer_code():
    hook = shipped.closure(DAEMONS["hook"][0]).modules
    agent = shipped.closure(DAEMONS["agent"][0]).modules

    def short(names):
        return {n.removeprefix(f"{shipped.PACKAGE}.") for n in names}

    assert {"cgroup.hook", "cgroup.persist", "cgroup.cgroupfs", "common.errors"} <= short(hook)
    assert {"hotplug.agent", "sound.plan", "cgroup.rules"} <= short(agent)
    assert "cgroup.hook" not in short(agent) and "hotplug.agent" not in short(hook)
    for names in (hook, agent):
        assert not short(names) & {"common.shipped", "cgroup.device", "hotplug.install"}


def _copy_collection(tmp_path: Path) -> Path:
    """This collection's module_utils under tmp_path, where a fresh interpreter imports them."""
    root = tmp_path / "copy"
    dst = root / "ansible_collections" / "kiosk" / "lxc" / "plugins" / "module_utils"
    shutil.copytree(REPO / "plugins" / "module_utils", dst, ignore=shutil.ignore_patterns("__pycache__"))
    return root


CLOSURE_OF = """
import sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.kiosk.lxc.plugins.module_utils.common import shipped
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
try:
    found = shipped.closure(shipped.PACKAGE + ".hotplug.agent")
except KioskError as exc:
    print("refused:", exc.msg)
else:
    print("requires:", " ".join(found.requires), "| modules:", " ".join(found.modules))
"""


@pytest.mark.parametrize(
    ("line", "verdict"),
    [
        (
            "from ansible.module_utils.common.text.converters import to_text",
            "refused: ansible_collections.kiosk.lxc.plugins.module_utils.sound.plan line {n} imports"
            " ansible.module_utils.common.text.converters: a host daemon runs on the host's python3"
            " without Ansible",
        ),
        (
            "from ansible_collections.community.general.plugins.module_utils import xenserver",
            "refused: ansible_collections.kiosk.lxc.plugins.module_utils.sound.plan line {n} imports"
            " ansible_collections.community.general.plugins.module_utils: a host daemon runs",
        ),
        (
            "from ansible_collections.kiosk.lxc.plugins.module_utils.sound import nosuch",
            "refused: ansible_collections.kiosk.lxc.plugins.module_utils.sound.plan line {n} imports"
            " ansible_collections.kiosk.lxc.plugins.module_utils.sound.nosuch, which is no module",
        ),
        ("    import yaml", "requires: libvirt lxml pyudev yaml |"),
        (
            "from ansible_collections.kiosk.lxc.plugins.module_utils.subid import ranges",
            "requires: libvirt lxml pyudev | modules: ",
        ),
    ],
)
def test_a_new_import_in_a_shipped_module_is_refused_listed_or_shipped(tmp_path, line, verdict):
    """Mounted for real on a copy of the collection: one line added to sound/plan.py (the agent imports it)."""
    root = _copy_collection(tmp_path)
    plan = root / "ansible_collections/kiosk/lxc/plugins/module_utils/sound/plan.py"
    text = plan.read_text(encoding="utf-8")
    if line.startswith("    "):  # inside a function: ast sees it, a plain import of the module would not
        text += f"\n\ndef _later():\n{line}\n"
    else:
        text += f"\n{line}\n"
    plan.write_text(text, encoding="utf-8")
    n = text.splitlines().index(line) + 1
    ran = subprocess.run(
        [sys.executable, "-I", "-c", CLOSURE_OF, str(root)], capture_output=True, text=True, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith(verdict.format(n=n)), ran.stdout
    if "subid" in line:
        assert f"{shipped.PACKAGE}.subid.ranges" in ran.stdout.split()


def test_an_entry_point_that_is_no_module_is_refused():
    with pytest.raises(KioskError, match=r"cgroup\.nosuch is not a module of this collection"):
        shipped.closure(f"{shipped.PACKAGE}.cgroup.nosuch")


def _files():
    return shipped.tree(DAEMONS["hook"][0])


def test_a_directory_is_written_whole_then_found_in_place_repaired_and_replaced(tmp_path):
    files = _files()
    first = shipped.plan_tree(str(tmp_path), "hook", files)
    assert first.write == "create" and first.remove == []
    assert os.path.basename(first.path) == f"hook-{shipped.digest(files)}"
    shipped.write_tree(first)
    assert shipped.plan_tree(str(tmp_path), "hook", files).write is None
    assert os.stat(first.path).st_mode & 0o777 == 0o755
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(first.path)], "no temporary directory left"
    for rel, text in files.items():
        assert Path(first.path, rel).read_text(encoding="utf-8") == text

    rules = Path(first.path, shipped.relpath(f"{shipped.PACKAGE}.cgroup.rules"))
    rules.write_text("broken\n", encoding="utf-8")
    Path(first.path, "stray.py").write_text("", encoding="utf-8")
    repair = shipped.plan_tree(str(tmp_path), "hook", files)
    assert repair.write == "repair"
    shipped.write_tree(repair)
    assert rules.read_text(encoding="utf-8") == files[shipped.relpath(f"{shipped.PACKAGE}.cgroup.rules")]
    assert not Path(first.path, "stray.py").exists()
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    cgroup = Path(rules).parent
    shutil.rmtree(cgroup)
    cgroup.symlink_to(elsewhere)  # a directory replaced by a link: repaired without writing through it
    shipped.write_tree(shipped.plan_tree(str(tmp_path), "hook", files))
    assert list(elsewhere.iterdir()) == [] and not cgroup.is_symlink()
    assert shipped.plan_tree(str(tmp_path), "hook", files).write is None

    newer = dict(files, **{shipped.relpath(f"{shipped.PACKAGE}.cgroup.hook"): "# a new version\n"})
    second = shipped.plan_tree(str(tmp_path), "hook", newer)
    assert (second.write, second.remove) == ("create", [first.path])
    assert shipped.plan_tree(str(tmp_path), "agent", files).remove == [], "another daemon's directories are not its"


def test_a_leftover_of_an_interrupted_write_is_removed_and_a_file_in_the_way_refused(tmp_path):
    leftover = tmp_path / ".hook-abc123.tmp"
    leftover.mkdir()
    assert shipped.plan_tree(str(tmp_path), "hook", _files()).remove == [str(leftover)]
    blocker = Path(shipped.plan_tree(str(tmp_path), "hook", _files()).path)
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(KioskError, match=r"is not a directory: remove it"):
        shipped.plan_tree(str(tmp_path), "hook", _files())


def test_the_old_shared_library_goes_once_no_launcher_names_it(tmp_path):
    legacy = tmp_path / shipped.LEGACY
    legacy.mkdir()
    hook, agent = tmp_path / "hook", tmp_path / "agent"
    old = f"sys.path.insert(0, {str(legacy)!r})\n"
    hook.write_text(old, encoding="utf-8")
    agent.write_text(old, encoding="utf-8")
    launchers = (str(hook), str(agent))
    assert shipped.legacy_unused(str(tmp_path), launchers, {str(hook): "new"}) == [], "the agent still uses it"
    agent.write_text("new", encoding="utf-8")
    assert shipped.legacy_unused(str(tmp_path), launchers, {str(hook): "new"}) == [str(legacy)]
    assert shipped.legacy_unused(str(tmp_path), launchers, {str(hook): None}) == [str(legacy)]
    assert shipped.legacy_unused(str(tmp_path), launchers, {}) == [], "the hook script on disk still names it"
