"""kiosk.lxc.guest against the real libvirtd, through ansible-playbook, with busybox guests.

Each test has its own bridge (no DHCP server: guests that need a lease are
the site test's, tests/integration/test_site.py), a busybox base rootfs with
a rootfs manifest, and guests named with the session's prefix; all of it is
removed at the end, with the subordinate id ranges and the name=systemd
cgroups the confined guests got.

The migration test provisions with the guest role as it was before this
module (the collection at the parent of the commit that removed
roles/guest/tasks/guest.yml, from git), then runs today's role on the same
guests: nothing may change and no guest may restart.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import guest as guestlib
import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.subid import ranges
from play import REPO, ansible_env, run_module, run_playbook

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="defines guests on this machine: needs root")


@pytest.fixture
def lab(libvirt_conn, guest_name):
    tag = guest_name.split("-")[0]
    work = Path(f"/var/tmp/kiosk-gm-{guest_name}")
    bridge = f"{tag}gm"[:15]
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    names: list[str] = []
    try:
        base = guestlib.make_rootfs(work / "base")
        (base / ".kiosk-rootfs.json").write_text(
            json.dumps({"key": "busybox", "arch": "amd64", "audio": "none", "user": "", "networkd": False})
        )
        (base / "etc" / "group").write_text("root:x:0:\naudio:x:29:\n")
        yield {"work": work, "base": base, "bridge": bridge, "tag": tag, "prefix": guest_name, "names": names}
    finally:
        subuid = ranges.read("/etc/subuid")["/etc/subuid"]
        starts = {e[1] for e in subuid if isinstance(e, tuple) and e[0] in names}
        for name in names:
            ranges.ensure({"name": name, "state": "absent"})
        for dom in libvirt_conn.listAllDomains():
            if dom.name() in names and dom.isActive():
                dom.destroy()
        guestlib.release_systemd_cgroups(names, starts)
        subprocess.run(["ip", "link", "del", bridge], check=False)
        shutil.rmtree(work, ignore_errors=True)


def _args(lab, guests: list[dict], **extra) -> dict:
    lab["names"].extend(g["name"] for g in guests if g["name"] not in lab["names"])
    args = {
        "kiosk": extra.pop("kiosk", f"{lab['tag']}-kiosk"),
        "guests": guests,
        "bases": {"": str(lab["base"])},
        "guest_dir": str(lab["work"] / "guests"),
        "defaults": {"init": "/init", "memory": "64MiB", "autostart": False, "bridge": lab["bridge"]},
        "network_wait": 0,
        "shutdown_timeout": 2,
    }
    args.update(extra)
    return args


def _by_name(result: dict) -> dict:
    return {g["name"]: g for g in result["guests"]}


@pytest.mark.parametrize("count", [1, 3])
def test_check_predicts_the_real_run_then_nothing_changes(libvirt_conn, lab, count):
    p = lab["prefix"]
    guests = [{"name": f"{p}-a", "sound": {"missing": "ignore"}}]
    if count == 3:
        guests += [{"name": f"{p}-b", "memory": "96MiB"}, {"name": f"{p}-c", "profile": "privileged"}]
    args = _args(lab, guests)

    check = run_module("kiosk.lxc.guest", args, check=True, diff=True)
    assert check["_status"] == "changed", check.get("msg")
    real = run_module("kiosk.lxc.guest", args, diff=True)
    assert real["_status"] == "changed", real.get("msg")
    # The check run predicted every action of the real run, files in the guest's rootfs included.
    assert [g["actions"] for g in check["guests"]] == [g["actions"] for g in real["guests"]]
    assert check["diff"] == real["diff"]
    a = _by_name(real)[f"{p}-a"]
    unit = f"{lab['work']}/guests/{p}-a/etc/systemd/system/kiosk-sound-nodes.service"
    assert f"write {unit}" in a["actions"] and a["actions"][-2:] == ["define", "start"], a["actions"]
    assert any(d["after_header"].endswith(unit) and "chgrp audio" in d["after"] for d in real["diff"])
    start = ranges.read("/etc/subuid")["/etc/subuid"]
    start = next(e[1] for e in start if isinstance(e, tuple) and e[0] == f"{p}-a")
    assert Path(unit).stat().st_uid == start
    link = Path(unit).parent / "sysinit.target.wants" / "kiosk-sound-nodes.service"
    assert os.readlink(link) == "../kiosk-sound-nodes.service" and link.lstat().st_uid == start
    for g in guests:
        dom = libvirt_conn.lookupByName(g["name"])
        assert dom.isActive(), g["name"]
    assert real["report"][f"{p}-a"]["profile"] == "confined"
    if count == 3:
        assert libvirt_conn.lookupByName(f"{p}-b").maxMemory() == 96 * 1024
        assert "<idmap>" not in libvirt_conn.lookupByName(f"{p}-c").XMLDesc(0)
        assert real["report"][f"{p}-c"]["profile"] == "privileged"
    ids = {g["name"]: libvirt_conn.lookupByName(g["name"]).ID() for g in guests}

    again_check = run_module("kiosk.lxc.guest", args, check=True, diff=True)
    again = run_module("kiosk.lxc.guest", args, diff=True)
    assert again_check["_status"] == "ok" and again["_status"] == "ok", (again_check, again)
    assert all(g["actions"] == [] for g in again["guests"]) and again["diff"] == []
    assert ids == {g["name"]: libvirt_conn.lookupByName(g["name"]).ID() for g in guests}


def test_prune_removes_only_this_kiosks_unlisted_guests(libvirt_conn, lab, busybox_rootfs):
    p = lab["prefix"]
    mine = [{"name": f"{p}-keep", "profile": "privileged"}, {"name": f"{p}-gone", "profile": "privileged"}]
    theirs = [{"name": f"{p}-other", "profile": "privileged"}]
    assert run_module("kiosk.lxc.guest", _args(lab, mine))["_status"] == "changed"
    assert run_module("kiosk.lxc.guest", _args(lab, theirs, kiosk=f"{lab['tag']}-elsewhere"))["_status"] == "changed"
    # A guest this collection did not define (no kiosk metadata).
    plain = f"{p}-plain"
    lab["names"].append(plain)
    libvirt_conn.defineXML(guestlib.domain_xml(plain, busybox_rootfs()))

    args = _args(lab, mine[:1], prune=True)
    check = run_module("kiosk.lxc.guest", args, check=True)
    assert [(g["name"], g["actions"]) for g in check["guests"]] == [
        (f"{p}-keep", []),
        (f"{p}-gone", ["stop", "undefine"]),
    ]
    real = run_module("kiosk.lxc.guest", args)
    assert real["_status"] == "changed", real.get("msg")
    left = {d.name() for d in libvirt_conn.listAllDomains()}
    assert f"{p}-gone" not in left
    assert {f"{p}-keep", f"{p}-other", plain} <= left
    # Its rootfs is kept: the guest's state is not thrown away.
    assert (lab["work"] / "guests" / f"{p}-gone" / "init").exists()
    assert run_module("kiosk.lxc.guest", args)["_status"] == "ok"


def test_prune_trusts_only_the_mark_this_module_wrote(libvirt_conn, lab, busybox_rootfs):
    """lxc_domain, whose metadata option a user sets, can neither claim a domain for a kiosk's prune
    (metadata kiosk=<this kiosk>) nor hide one of its guests from it (its metadata replaced)."""
    p = lab["prefix"]
    kiosk = f"{lab['tag']}-kiosk"
    mine = [{"name": f"{p}-keep", "profile": "privileged"}, {"name": f"{p}-gone", "profile": "privileged"}]
    assert run_module("kiosk.lxc.guest", _args(lab, mine))["_status"] == "changed"
    claimed = f"{p}-claimed"
    lab["names"].append(claimed)
    domain = {"name": claimed, "rootfs": str(busybox_rootfs()), "init": "/init", "state": "stopped"}
    claim = run_module("kiosk.lxc.lxc_domain", dict(domain, metadata={"kiosk": kiosk, "role": "signage"}))
    # The guest's own metadata, replaced by lxc_domain (the kiosk key with it, before).
    hide = run_module("kiosk.lxc.lxc_domain", {"name": f"{p}-gone", "metadata": {"role": "spare"}})
    assert hide["_status"] == "changed", hide.get("msg")

    pruned = run_module("kiosk.lxc.guest", _args(lab, mine[:1], prune=True))
    assert pruned["_status"] == "changed", pruned.get("msg")
    assert [g["name"] for g in pruned["guests"] if g["actions"]] == [f"{p}-gone"]
    left = {d.name() for d in libvirt_conn.listAllDomains()}
    assert f"{p}-gone" not in left and f"{p}-keep" in left
    # The claim was refused before anything was touched, naming the option.
    assert claim["_status"] == "failed" and "metadata.kiosk is reserved" in claim["msg"], claim
    assert claimed not in left
    plain = run_module("kiosk.lxc.lxc_domain", dict(domain, metadata={"role": "signage"}))
    assert plain["_status"] == "changed", plain.get("msg")
    assert run_module("kiosk.lxc.guest", _args(lab, mine[:1], prune=True))["_status"] == "ok"
    assert claimed in {d.name() for d in libvirt_conn.listAllDomains()}


def test_a_guest_that_fails_to_start_is_named_and_the_others_are_served(libvirt_conn, lab):
    p = lab["prefix"]
    guests = [
        {"name": f"{p}-ok", "profile": "privileged"},
        {"name": f"{p}-bad", "profile": "privileged", "init": "/no/such/init"},
        {"name": f"{p}-ok2", "profile": "privileged"},
    ]
    result = run_module("kiosk.lxc.guest", _args(lab, guests))
    assert result["_status"] == "failed"
    assert result["failed_guests"] == [f"{p}-bad"], result.get("msg")
    assert f"Guest '{p}-bad'" in result["msg"] and f"'{p}-ok'" not in result["msg"], result["msg"]
    assert libvirt_conn.lookupByName(f"{p}-ok").isActive() and libvirt_conn.lookupByName(f"{p}-ok2").isActive()
    # Defined by this run and failing its first start, it is undefined again: nothing half done.
    assert f"{p}-bad" not in {d.name() for d in libvirt_conn.listAllDomains()}


def test_leases_are_waited_for_together_within_one_timeout(libvirt_conn, lab):
    """No DHCP server on the bridge: every guest times out; the wait is one timeout, not one per guest."""
    p = lab["prefix"]
    guests = [{"name": f"{p}-{i}", "profile": "privileged"} for i in range(3)]
    assert run_module("kiosk.lxc.guest", _args(lab, guests))["_status"] == "changed"
    # The same run without the wait, timed beside it: ansible-playbook's start-up and the module's
    # own work, whatever the machine's load is just now.
    began = time.monotonic()
    assert run_module("kiosk.lxc.guest", _args(lab, guests))["_status"] == "ok"
    control = time.monotonic() - began
    began = time.monotonic()
    result = run_module("kiosk.lxc.guest", _args(lab, guests, network_wait=4))
    waited = time.monotonic() - began - control
    assert result["_status"] == "failed"
    assert sorted(result["failed_guests"]) == sorted(g["name"] for g in guests)
    assert "no DHCP lease within 4 s" in result["msg"]
    # One 4 s wait for all three, not three waits one after the other (12 s).
    assert 2 < waited < 8, (waited, control)


# ------------------------------------------------------------------ migration


def _old_collection(dest: Path) -> Path:
    """The collection as it was before kiosk.lxc.guest, unpacked under dest/ansible_collections/kiosk/lxc."""
    removed = subprocess.run(
        ["git", "-C", str(REPO), "log", "--diff-filter=D", "-1", "--format=%H", "--", "roles/guest/tasks/guest.yml"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert removed, "no commit removed roles/guest/tasks/guest.yml"
    root = dest / "ansible_collections" / "kiosk" / "lxc"
    root.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", f"{removed}^"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    assert (root / "roles" / "guest" / "tasks" / "guest.yml").exists()
    return dest


def _tree(root: Path) -> dict:
    """Every file of a guest's root with its bytes, links with their targets (what the guest would see)."""
    out = {}
    for path in root.rglob("*"):
        if path.is_symlink():
            out[str(path.relative_to(root))] = "-> " + os.readlink(path)
        elif path.is_file():
            out[str(path.relative_to(root))] = path.read_bytes()
    return out


def test_guests_of_the_old_role_are_adopted_without_change_or_restart(libvirt_conn, lab):
    p = lab["prefix"]
    guests = [
        {"name": f"{p}-c", "sound": {"missing": "ignore"}},
        {"name": f"{p}-plain", "memory": "80MiB"},
        {"name": f"{p}-s", "profile": "seed000"},
    ]
    lab["names"].extend(g["name"] for g in guests)
    pb = guestlib.role_play(lab["work"], lab["bridge"], guests)
    with tempfile.TemporaryDirectory() as old, tempfile.NamedTemporaryFile(suffix=".jsonl") as rec:
        env = dict(ansible_env(rec.name), ANSIBLE_COLLECTIONS_PATH=str(_old_collection(Path(old))))
        python = f"ansible_python_interpreter={sys.executable}"
        cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
               "-e", python, "-e", "ansible_connection=local", str(pb)]  # fmt: skip
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        old_tasks = {json.loads(line)["task"] for line in Path(rec.name).read_text().splitlines() if line.strip()}
    assert any(t.startswith("Define guest") for t in old_tasks), "the old role did not run"
    before = {g["name"]: libvirt_conn.lookupByName(g["name"]) for g in guests}
    before = {n: (d.ID(), d.XMLDesc(0)) for n, d in before.items()}
    for g in guests:  # each guest's init has written what it writes (its pid) before its root is read
        guestlib.wait_for_file(lab["work"] / "guests" / g["name"] / "out" / "started")
    roots = {g["name"]: _tree(lab["work"] / "guests" / g["name"]) for g in guests}
    assert all(".kiosk-rootfs.json" in tree for tree in roots.values()), "the old role kept no record inside"

    # The first run of today's role changes nothing: the one thing it does is bookkeeping, copying each
    # clone's rootfs record beside it, out of the guest's reach (0.1 kept it inside; rootfs/build.py),
    # which check mode lists too and which leaves the guest's root as it was.
    proc, records = run_playbook(pb, "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert [r["task"] for r in records if r["status"] == "changed"] == [], proc.stdout[-4000:]
    proc, records = run_playbook(pb, "--diff")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert [r["task"] for r in records if r["status"] == "changed"] == [], proc.stdout[-4000:]
    module = next(r for r in records if r["task"] == "Provision the guests of this kiosk")
    for g in module["result"]["guests"]:
        assert g["actions"] == [], g
        record = lab["work"] / "guests" / f".kiosk-rootfs-{g['name']}.json"
        assert g["housekeeping"] == [f"copy the record of {record.parent / g['name']} out of it to {record}"], g
        assert record.is_file()
    assert {g["name"]: _tree(lab["work"] / "guests" / g["name"]) for g in guests} == roots
    assert {g["name"]: g["profile"] for g in module["result"]["guests"]} == {
        f"{p}-c": "confined",
        f"{p}-plain": "confined",
        f"{p}-s": "privileged",
    }
    after = {n: (libvirt_conn.lookupByName(n).ID(), libvirt_conn.lookupByName(n).XMLDesc(0)) for n in before}
    assert after == before  # no define, no restart: the same running definitions

    # Their bridge ports have no anti-spoofing filter (0.1 had none): kept so, and said, every run.
    unfiltered = [w for w in module["result"].get("warnings", []) if "no anti-spoofing filter" in w]
    assert len(unfiltered) == 3, module["result"].get("warnings")

    proc, records = run_playbook(pb)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert [r["task"] for r in records if r["status"] == "changed"] == [], proc.stdout[-4000:]
    module = next(r for r in records if r["task"] == "Provision the guests of this kiosk")
    assert [g["housekeeping"] for g in module["result"]["guests"]] == [[], [], []]
