"""The fresh-machine proof's parts that need no root: cache key, commands, the checkout it proves.

The proof itself (`make fresh-machine`) is the test of the rest: it needs root, debootstrap and
the Debian mirror. Here: real git repositories in tmp_path, the real /proc of this machine.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import fresh_machine as fm
import pytest

REPO = Path(__file__).resolve().parents[3]


# ----------------------------------------------------------------- the bare root and its cache key
def test_the_bare_root_is_minbase_with_the_issues_four_packages():
    cmd = fm.RootSpec().debootstrap(Path("/x"))
    assert cmd[:3] == ["debootstrap", "--variant=minbase", "--arch=amd64"]
    assert "--include=ca-certificates,git,make,python3" in cmd
    assert cmd[-3:-1] == ["bookworm", "/x"]


def test_the_key_ignores_package_order_and_changes_with_every_input():
    base = fm.RootSpec()
    assert base.key() == fm.RootSpec(packages=("python3", "make", "git", "ca-certificates", "git")).key()
    assert base.key().startswith("bookworm-amd64-")
    others = [
        fm.RootSpec(packages=(*fm.PACKAGES, "gawk")),
        fm.RootSpec(release="trixie"),
        fm.RootSpec(mirror="http://mirror.example/debian"),
        fm.RootSpec(variant="buildd"),
        fm.RootSpec(version=fm.ROOT_VERSION + 1),
    ]
    keys = {base.key(), *(o.key() for o in others)}
    assert len(keys) == 1 + len(others)


# ----------------------------------------------------------------- what runs in the chroot
def test_the_chroot_runs_the_readme_line_then_deps_lint_unit():
    assert fm.chroot_script() == [fm.README_PRELUDE, "make deps", "make lint", "make unit"]
    assert fm.chroot_script(prelude="") == ["make deps", "make lint", "make unit"]


def test_the_readme_line_is_the_one_in_the_readme_quick_start():
    """The proof runs the README's one line before `make deps`: the two must not drift apart."""
    quick_start = (REPO / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    lines = [ln.split("#", 1)[0].strip() for ln in re.findall(r"```sh\n(.*?)```", quick_start, re.S)[0].splitlines()]
    assert lines == [fm.README_PRELUDE]


# ----------------------------------------------------------------- the checkout that goes in
def _git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t", GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1")  # fmt: skip
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "src"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    for name in ("changed", "deleted", "staged", "same"):
        (repo / name).write_text(f"{name} committed\n")
    (repo / ".gitignore").write_text("ignored\n.venv\n")
    (repo / "run.sh").write_text("#!/bin/sh\n")
    (repo / "run.sh").chmod(0o755)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "first")
    first = _git(repo, "rev-parse", "HEAD").strip()
    (repo / "same").write_text("same, second commit\n")
    _git(repo, "commit", "-q", "-am", "second")
    # The working tree's changes against HEAD, of every kind.
    (repo / "changed").write_text("changed in the working tree\n")
    (repo / "deleted").unlink()
    (repo / "staged").write_text("staged, not committed\n")
    _git(repo, "add", "staged")
    (repo / "sub").mkdir()
    (repo / "sub/new").write_text("untracked\n")
    (repo / "ignored").write_text("ignored\n")
    (repo / ".venv").symlink_to("/nonexistent/venv")  # a shared venv linked in, as worktrees do
    return repo, first


def test_the_clone_is_head_with_the_working_tree_laid_over_it(repo, tmp_path):
    src = repo[0]
    said = fm.clone_checkout(src, tmp_path / "dest", None)
    assert _tree(tmp_path / "dest") == {
        ".gitignore": "ignored\n.venv\n",
        "changed": "changed in the working tree\n",
        "run.sh": "#!/bin/sh\n",
        "same": "same, second commit\n",
        "staged": "staged, not committed\n",
        "sub/new": "untracked\n",
    }
    assert not os.path.lexists(tmp_path / "dest/.venv")
    assert os.access(tmp_path / "dest/run.sh", os.X_OK)
    assert said.endswith("+ 3 uncommitted file(s) + 1 deletion(s)")


def test_a_ref_is_cloned_alone_with_nothing_over_it(repo, tmp_path):
    src, first = repo
    said = fm.clone_checkout(src, tmp_path / "dest", first[:7])
    assert _tree(tmp_path / "dest") == {
        ".gitignore": "ignored\n.venv\n",
        "changed": "changed committed\n",
        "deleted": "deleted committed\n",
        "run.sh": "#!/bin/sh\n",
        "same": "same committed\n",
        "staged": "staged committed\n",
    }
    assert _git(tmp_path / "dest", "rev-parse", "HEAD").strip() == first
    assert said == f"commit {first[:7]} ({first[:7]})"


# ----------------------------------------------------------------- what the chroot is given
def test_the_machines_local_cas_are_trusted_in_the_root(tmp_path):
    local, root = tmp_path / "local", tmp_path / "root"
    local.mkdir()
    (local / "proxy.crt").write_text("-----BEGIN CERTIFICATE-----\nPROXY\n-----END CERTIFICATE-----")
    (local / "notes.txt").write_text("not a certificate\n")
    (root / "etc/ssl/certs").mkdir(parents=True)
    (root / "etc/ssl/certs/ca-certificates.crt").write_text("-----BEGIN CERTIFICATE-----\nDEBIAN\n")
    assert fm.trust_local_cas(root, local) == 1
    bundle = (root / "etc/ssl/certs/ca-certificates.crt").read_text()
    assert bundle.endswith("DEBIAN\n-----BEGIN CERTIFICATE-----\nPROXY\n-----END CERTIFICATE-----\n")
    assert (root / "usr/local/share/ca-certificates/proxy.crt").is_file()
    assert not (root / "usr/local/share/ca-certificates/notes.txt").exists()


def test_a_process_still_running_is_named_and_a_dead_one_is_not():
    """leftover_processes on this machine's real /proc, with a child of this test as the service."""
    daemon = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["sleep", "60"])
    try:
        dead.send_signal(signal.SIGKILL)
        os.waitid(os.P_PID, dead.pid, os.WEXITED | os.WNOWAIT)  # a zombie until reaped
        left = fm.leftover_processes(Path("/proc"), me=os.getpid())
        assert f"{daemon.pid} sleep" in left
        assert f"{dead.pid} sleep" not in left
        assert not any(entry.startswith(f"{os.getpid()} ") for entry in left)
    finally:
        daemon.kill()
        daemon.wait()
        dead.wait()
