# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a host daemon runs: the import closure of its entry point, installed in a directory of its own.

The libvirt hook (cgroup.hook) and the hotplug agent (hotplug.agent) run on the
host's python3 from copies of this collection's module_utils, under the same
absolute names. What each needs is computed from its entry point: every module
of PACKAGE it imports, recursively, read with ast (every import statement, also
those in try blocks and functions). An import of Ansible or of another
collection is refused (the daemons run without Ansible); other non-standard
imports are listed as the daemon's host requirements.

The sources are read through the import system (find_spec, then the loader's
get_source), so this works from a checkout and from the zip AnsiballZ ships a
module in. AnsiballZ packs module_utils by the same recursive walk from the
module, so the installer only has to import the entry point.

Each daemon lives in LIB_ROOT/<daemon>-<sha256 of its files, 16 hex digits>:
a new version is written under a temporary name beside the old one and renamed
into place, the launcher is switched to it, then the old directory goes. One
daemon's upgrade never touches the other's files. LEGACY is the one directory
both shared before: it is removed once no launcher names it any more.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.common.files import fsync_dir, write_atomic

PACKAGE = "ansible_collections.kiosk.lxc.plugins.module_utils"
LIB_ROOT = "/usr/local/lib/kiosk-lxc"
# The library both daemons shared up to 0.1 (LIB_ROOT/python), and the launchers that named it then.
LEGACY = "python"
LEGACY_LAUNCHERS = ("/etc/libvirt/hooks/lxc.d/50-kiosk-cgroup-device", "/usr/local/sbin/kiosk-lxc-hotplug")
DIGEST_LEN = 16


@dataclass(frozen=True)
class Closure:
    modules: tuple[str, ...]  # the dotted names of PACKAGE's modules the entry point needs, itself included
    requires: tuple[str, ...]  # top-level names of what it imports from outside the standard library


def _spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a parent that is no package, or not there
        return None


def _source(name: str, spec) -> str:
    source = spec.loader.get_source(name) if spec is not None and spec.loader is not None else None
    if source is None:
        raise KioskError(f"A host daemon cannot be installed: no source for {name}")
    return source


def _imports(name: str, source: str):
    """(line, dotted name) of everything the module imports; `from X import y` gives X.y when X is a package."""
    for node in ast.walk(ast.parse(source, filename=name)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.rsplit(".", node.level)[0]
                base = f"{parent}.{base}" if base else parent
            # Is X a package (then y is its module: ours are namespaces, with no names of their own) or a
            # module (then y is a name in it)? Found without importing X: find_spec imports only its parents.
            spec = _spec(base) if base.startswith(f"{PACKAGE}.") else None
            package = spec is not None and spec.submodule_search_locations is not None
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield node.lineno, sub if package and alias.name != "*" else base


def closure(entry: str) -> Closure:
    """The modules of PACKAGE that `entry` imports, recursively, and what it needs from outside.

    Raises KioskError naming the module and line of an import a host daemon cannot have: a module
    of PACKAGE that does not exist, or anything of Ansible or another collection.
    """
    found, requires, todo = {}, set(), [entry]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        spec = _spec(name)
        if spec is None:
            raise KioskError(f"A host daemon cannot be installed: {name} is not a module of this collection")
        if spec.submodule_search_locations is not None:
            continue  # a package: a namespace on the host, nothing to copy
        found[name] = source = _source(name, spec)
        for line, dotted in _imports(name, source):
            top = dotted.split(".")[0]
            if dotted == PACKAGE or dotted.startswith(f"{PACKAGE}."):
                if _spec(dotted) is None:
                    raise KioskError(f"{name} line {line} imports {dotted}, which is no module of this collection")
                todo.append(dotted)
            elif top in ("ansible", "ansible_collections"):
                raise KioskError(
                    f"{name} line {line} imports {dotted}: a host daemon runs on the host's python3 without Ansible"
                    " and gets only this collection's module_utils"
                )
            elif top not in sys.stdlib_module_names and top != "__future__":
                requires.add(top)
    return Closure(tuple(sorted(found)), tuple(sorted(requires)))


def relpath(name: str) -> str:
    return os.path.join(*name.split(".")) + ".py"


def tree(entry: str) -> dict[str, str]:
    """{path relative to the daemon's directory: source} of every file the daemon needs."""
    return {relpath(name): _source(name, _spec(name)) for name in closure(entry).modules}


def digest(files: dict[str, str]) -> str:
    sha = hashlib.sha256()
    for path in sorted(files):
        sha.update(f"{path}\0{len(files[path].encode())}\0".encode())
        sha.update(files[path].encode())
    return sha.hexdigest()[:DIGEST_LEN]


# ---------------------------------------------------------------- files on the host
def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError):
        return None


def _is(path: str, content: str, mode: int) -> bool:
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        return (
            os.path.isfile(path)
            and not os.path.islink(path)
            and (st.st_mode & 0o777) == mode
            and (read_text(path) == content)
        )
    return False


def plan_files(files: dict[str, tuple[str, int]]) -> list[str]:
    """The paths whose content or mode differs from what is wanted."""
    return [path for path, (content, mode) in files.items() if not _is(path, content, mode)]


def write_files(files: dict[str, tuple[str, int]], paths: list[str], what: str) -> None:
    for path in paths:
        try:
            content, mode = files[path]
            write_atomic(path, content, mode=mode)
        except OSError as exc:
            raise KioskError(f"Installing {what} failed: {path}: {exc.strerror}") from exc


# ---------------------------------------------------------------- a daemon's own directory
@dataclass
class Tree:
    """The plan for one daemon's directory."""

    path: str  # lib_root/<daemon>-<digest>
    files: dict[str, str]
    write: str | None = None  # "create" (not there) or "repair" (there, with a file changed); None: in place
    remove: list[str] = field(default_factory=list)  # the daemon's other directories: older versions, leftovers


def installed(lib_root: str, daemon: str) -> list[str]:
    """The daemon's directories in lib_root (every version, and leftovers of an interrupted write)."""
    pattern = re.compile(rf"{re.escape(daemon)}-[0-9a-f]{{{DIGEST_LEN}}}|\.{re.escape(daemon)}-\w+\.tmp")
    try:
        names = os.listdir(lib_root)
    except OSError:
        return []
    return sorted(os.path.join(lib_root, n) for n in names if pattern.fullmatch(n))


def _differs(path: str, files: dict[str, str]) -> bool:
    seen = set()
    for root, dirs, names in os.walk(path):
        for d in dirs:
            if os.path.islink(os.path.join(root, d)):
                return True
        for n in names:
            seen.add(os.path.relpath(os.path.join(root, n), path))
    return seen != set(files) or not all(_is(os.path.join(path, rel), text, 0o644) for rel, text in files.items())


def plan_tree(lib_root: str, daemon: str, files: dict[str, str]) -> Tree:
    path = os.path.join(lib_root, f"{daemon}-{digest(files)}")
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        raise KioskError(f"{path} is not a directory: remove it, it is where {daemon} is to be installed")
    write = None if os.path.isdir(path) and not _differs(path, files) else "repair" if os.path.isdir(path) else "create"
    return Tree(path, files, write, [p for p in installed(lib_root, daemon) if p != path])


def _write_into(root: str, files: dict[str, str]) -> None:
    for rel, text in files.items():
        write_atomic(os.path.join(root, rel), text, mode=0o644)


def write_tree(plan: Tree) -> None:
    """Create the directory under a temporary name and rename it into place; or repair it file by file."""
    lib_root, daemon = os.path.split(plan.path)
    try:
        if plan.write == "repair":  # first what does not belong (a link to a directory too), then the files
            for root, dirs, names in os.walk(plan.path):
                for n in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                    p = os.path.join(root, n)
                    if os.path.islink(p) or os.path.relpath(p, plan.path) not in plan.files:
                        os.unlink(p)
            _write_into(plan.path, plan.files)
        elif plan.write == "create":
            os.makedirs(lib_root, mode=0o755, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=f".{daemon.rsplit('-', 1)[0]}-", suffix=".tmp", dir=lib_root)
            try:
                _write_into(tmp, plan.files)
                for root, dirs, _names in os.walk(tmp):
                    os.chmod(root, 0o755)
                    for d in dirs:
                        os.chmod(os.path.join(root, d), 0o755)
                os.rename(tmp, plan.path)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            fsync_dir(lib_root)
    except OSError as exc:
        raise KioskError(f"Installing {plan.path} failed: {exc.filename}: {exc.strerror}") from exc


def remove_trees(paths: list[str]) -> None:
    for path in paths:
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise KioskError(f"Removing {path} failed: {exc.filename}: {exc.strerror}") from exc


def legacy_unused(lib_root: str, launchers: tuple[str, ...], after: dict[str, str | None]) -> list[str]:
    """[LEGACY's path] when it is there and no launcher names it once this run is done, else [].

    `after` holds the launchers this run writes (or removes: None); the others are read as they are.
    """
    legacy = os.path.join(lib_root, LEGACY)
    if not os.path.isdir(legacy) or os.path.islink(legacy):
        return []
    for path in launchers:
        text = after[path] if path in after else read_text(path)
        if text is not None and repr(legacy) in text:
            return []
    return [legacy]
