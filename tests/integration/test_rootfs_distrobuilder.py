"""kiosk.lxc.rootfs with method: distrobuilder, through Ansible, against a STAND-IN distrobuilder.

The real distrobuilder cannot run here: Debian 12 does not package it and this
machine reaches only PyPI and Debian mirrors (it is a Go program built from
GitHub or installed as a snap). So each test writes a small shell script named
`distrobuilder` into tmp_path and puts it first on PATH (the module inherits
ansible-playbook's environment, which tests/lib/play.py copies from ours).
The stand-in implements `distrobuilder build-dir <definition> <target>` by
making a tiny root filesystem in <target> (etc/os-release naming the
definition's image distribution and release, bin/, usr/), logs each call to a
file, and like the real tool writes its progress as INFO lines on stderr.
When a flag file exists it fails half-way: it writes part of the tree, then
prints "Error: ..." and exits 1. Everything else - the module, the cache by
definition content, the atomic rename, the manifest, configure() - is real.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from play import run_module

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds root filesystems: needs root")

STAND_IN = r"""#!/bin/sh
# Stand-in for distrobuilder (the real one cannot be installed on this test host).
set -e
echo "$*" >> '{log}'
[ "$1" = build-dir ] || {{ echo "Error: unknown command \"$1\" for \"distrobuilder\"" >&2; exit 1; }}
def="$2"; target="$3"
dist=$(sed -n 's/^ *distribution: *//p' "$def" | head -n1)
rel=$(sed -n 's/^ *release: *//p' "$def" | head -n1)
echo "INFO   [2026-01-01T00:00:00Z] Downloading source" >&2
mkdir -p "$target/etc" "$target/bin" "$target/usr/lib" "$target/var/log"
printf 'ID=%s\nVERSION_CODENAME=%s\n' "$dist" "$rel" > "$target/etc/os-release"
if [ -e '{fail}' ]; then
    echo "half" > "$target/usr/lib/half-unpacked"
    echo "INFO   [2026-01-01T00:00:01Z] Running hooks" >&2
    echo "Error: Failed to run post-unpack: Failed to run: apt-get update: exit status 100" >&2
    exit 1
fi
echo "$dist $rel" > "$target/etc/hostname"
echo "INFO   [2026-01-01T00:00:02Z] Done" >&2
"""

DEFINITION = """\
image:
  distribution: {dist}
  release: {rel}
source:
  downloader: debootstrap
  url: http://deb.debian.org/debian
"""


@pytest.fixture
def tool(tmp_path, monkeypatch):
    """The stand-in first on PATH; returns (calls(), fail_flag path)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "distrobuilder.calls"
    fail = tmp_path / "distrobuilder.fail"
    exe = bindir / "distrobuilder"
    exe.write_text(STAND_IN.format(log=log, fail=fail))
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")

    def calls():
        return log.read_text().splitlines() if log.exists() else []

    return calls, fail


def definition(tmp_path, dist="kioskos", rel="r1"):
    path = tmp_path / "kiosk.yaml"
    path.write_text(DEFINITION.format(dist=dist, rel=rel))
    return path


def args(cache, defn, **extra):
    return {"method": "distrobuilder", "definition": str(defn), "cache_dir": str(cache)} | extra


def leftovers(cache):
    """Everything in the cache dir but the lock files and the records beside each rootfs."""
    if not cache.exists():
        return []
    return sorted(p.name for p in cache.iterdir() if not p.name.startswith((".lock-", ".kiosk-rootfs-")))


def test_build_then_cached_by_definition_content(tmp_path, tool):
    calls, _fail = tool
    cache = tmp_path / "cache"
    defn = definition(tmp_path)
    first = run_module("kiosk.lxc.rootfs", args(cache, defn))
    assert first["_status"] == "changed", first.get("msg", first["_stdout"])
    root = Path(first["path"])
    assert root.parent == cache
    # Built in a hidden sibling, renamed into place when complete.
    assert len(calls()) == 1
    work = re.escape(str(cache / f".build-{root.name}-"))
    assert re.fullmatch(rf"build-dir {re.escape(str(defn))} {work}\d+", calls()[0]), calls()
    assert (root / "etc" / "os-release").read_text() == "ID=kioskos\nVERSION_CODENAME=r1\n"
    assert (root / "etc" / "hostname").read_text() == "kioskos r1\n"
    assert (root / "bin").is_dir()
    manifest = json.loads((root.parent / f".kiosk-rootfs-{root.name}.json").read_text())
    assert manifest["key"] == first["key"]
    assert manifest["method"] == "distrobuilder"
    assert manifest["definition"] == str(defn)
    # configure() ran on what the tool made: networkd DHCP on eth0.
    assert (root / "etc" / "systemd" / "network" / "80-kiosk-eth0.network").exists()
    assert leftovers(cache) == [root.name]

    again = run_module("kiosk.lxc.rootfs", args(cache, defn))
    assert again["_status"] == "ok"
    assert (again["path"], again["key"]) == (first["path"], first["key"])
    assert len(calls()) == 1, "an unchanged definition must not run distrobuilder again"

    # The same content in another file is the same rootfs (cached by content, not path).
    copy = tmp_path / "copy.yaml"
    copy.write_bytes(defn.read_bytes())
    moved = run_module("kiosk.lxc.rootfs", args(cache, copy))
    assert moved["_status"] == "ok"
    assert moved["path"] == first["path"]
    assert len(calls()) == 1


def test_changed_definition_content_is_rebuilt(tmp_path, tool):
    """Default names: a new key is a new directory and the old one stays (guests may use it).
    A fixed name: the same directory, replaced by the new build in one rename."""
    calls, _fail = tool
    cache = tmp_path / "cache"
    defn = definition(tmp_path, rel="r1")
    one = run_module("kiosk.lxc.rootfs", args(cache, defn))
    defn.write_text(DEFINITION.format(dist="kioskos", rel="r2"))
    two = run_module("kiosk.lxc.rootfs", args(cache, defn))
    assert two["_status"] == "changed"
    assert len(calls()) == 2
    assert two["key"] != one["key"]
    assert two["path"] != one["path"]
    assert (Path(two["path"]) / "etc" / "os-release").read_text() == "ID=kioskos\nVERSION_CODENAME=r2\n"
    assert (Path(one["path"]) / "etc" / "os-release").read_text() == "ID=kioskos\nVERSION_CODENAME=r1\n"

    named = args(cache, defn, name="kiosk")
    built = run_module("kiosk.lxc.rootfs", named)
    assert built["_status"] == "changed"
    assert len(calls()) == 3
    defn.write_text(DEFINITION.format(dist="kioskos", rel="r3"))
    replaced = run_module("kiosk.lxc.rootfs", named)
    assert replaced["_status"] == "changed"
    assert len(calls()) == 4
    assert replaced["path"] == built["path"] == str(cache / "kiosk")
    assert any(a.startswith(f"replace {cache / 'kiosk'}") for a in replaced["actions"]), replaced["actions"]
    root = cache / "kiosk"
    assert (root / "etc" / "os-release").read_text() == "ID=kioskos\nVERSION_CODENAME=r3\n"
    assert json.loads((root.parent / f".kiosk-rootfs-{root.name}.json").read_text())["key"] == replaced["key"]
    assert not [n for n in leftovers(cache) if n.startswith(".build-")]


def test_check_mode_builds_nothing(tmp_path, tool):
    calls, _fail = tool
    cache = tmp_path / "cache"
    defn = definition(tmp_path)
    res = run_module("kiosk.lxc.rootfs", args(cache, defn), check=True, diff=True)
    assert res["_status"] == "changed"
    assert res["actions"] == [f"build {res['path']} with distrobuilder"]
    assert not Path(res["path"]).exists()
    assert leftovers(cache) == []
    assert calls() == []
    real = run_module("kiosk.lxc.rootfs", args(cache, defn))
    assert (real["_status"], real["path"], real["key"]) == ("changed", res["path"], res["key"])


def test_failed_build_leaves_nothing_and_next_run_builds(tmp_path, tool):
    calls, fail = tool
    cache = tmp_path / "cache"
    defn = definition(tmp_path)
    fail.touch()
    res = run_module("kiosk.lxc.rootfs", args(cache, defn))
    assert res["_status"] == "failed"
    msg = res["msg"]
    assert "\n" not in msg, f"not one line: {msg!r}"
    assert "Traceback" not in msg
    assert str(defn) in msg
    assert msg.endswith("Error: Failed to run post-unpack: Failed to run: apt-get update: exit status 100"), msg
    assert len(calls()) == 1
    assert leftovers(cache) == [], "a failed build must leave no .build-* dir and no rootfs"

    fail.unlink()
    good = run_module("kiosk.lxc.rootfs", args(cache, defn))
    assert good["_status"] == "changed"
    assert len(calls()) == 2
    root = Path(good["path"])
    assert not (root / "usr" / "lib" / "half-unpacked").exists()
    assert (root / "etc" / "hostname").read_text() == "kioskos r1\n"
    assert leftovers(cache) == [root.name]


def test_without_distrobuilder_fails_before_building(tmp_path, monkeypatch):
    # The stand-in is not on PATH here; nor must any real distrobuilder be.
    path = [d for d in os.environ["PATH"].split(os.pathsep) if d and not (Path(d) / "distrobuilder").exists()]
    monkeypatch.setenv("PATH", os.pathsep.join(path))
    cache = tmp_path / "cache"
    # Found in plan(): check mode says the same as the real run, and nothing is made.
    for check in (True, False):
        res = run_module("kiosk.lxc.rootfs", args(cache, definition(tmp_path)), check=check)
        assert res["_status"] == "failed", (check, res)
        assert res["msg"] == "method: distrobuilder is not installed on this host"
        assert not cache.exists()
