"""The bad-input table (tests/bad_inputs.yml), run through ansible-playbook.

Every case must fail with one line that names its option, and leave what
the collection manages exactly as it was: libvirt definitions (virsh list and
dumpxml of the test's guests), bridges and addresses (ip -j link/addr),
firewall rules (nft -j list ruleset, iptables-save), the running test guest's
device cgroup (devices.list), /etc/subuid and /etc/subgid, and the scratch
rootfs cache. All cases run in one ansible-playbook, each in a block whose
rescue lets the next one run.

Other test sessions may change this shared machine at the same time, so the
snapshot keeps only what the cases could touch: the test's own guests, the
bridges and firewall objects named with this session's tag (every bridge a
case names carries it) plus the demo bridge lxcbr0, and the subid entries.

Role argument-spec failures are framed by ansible-core with a first line
"Validation of arguments failed:"; that header is dropped before the
one-line check (the rest is the role's own one-line message).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import guest as guestlib
import pytest
import yaml
from play import run_playbook

REPO = Path(__file__).resolve().parents[2]
TABLE = REPO / "tests" / "bad_inputs.yml"
CORE_HEADER = "Validation of arguments failed:\n"


def load_cases() -> list[dict]:
    return yaml.safe_load(TABLE.read_text(encoding="utf-8"))


def _task(case: dict) -> dict:
    key = case.get("set", case["option"])
    if "module" in case:
        return {"name": f"bad {case['id']}", case["module"]: dict(case["args"], **{key: case["value"]})}
    return {
        "name": f"bad {case['id']}",
        "ansible.builtin.include_role": {"name": case["role"]},
        "vars": dict(case["vars"], **{key: case["value"]}),
    }


def playbook(cases: list[dict]) -> list[dict]:
    tasks = []
    for case in cases:
        tasks.append({"name": f"case {case['id']}", "ansible.builtin.debug": {"msg": case["id"]}})
        tasks.append(
            {
                "name": f"block {case['id']}",
                "block": [_task(case)],
                "rescue": [{"name": f"rescued {case['id']}", "ansible.builtin.debug": {"msg": "rescued"}}],
            }
        )
    return [{"name": "bad inputs", "hosts": "all", "gather_facts": False, "tasks": tasks}]


def outcomes(records: list[dict], modules: set[str]) -> dict[str, list[dict]]:
    """Failed results per case id, from the recorded task results in order.

    A module case whose task succeeded is recorded as such; a role case's
    include (and the role's tasks before its failure) are not failures.
    """
    out: dict[str, list[dict]] = {}
    current = None
    for rec in records:
        if rec["task"].startswith("case "):
            current = rec["task"][5:]
            out[current] = []
        elif current and rec["status"] == "failed":
            out[current].append(rec["result"])
        elif current in modules and rec["task"] == f"bad {current}" and rec["status"] in ("ok", "changed"):
            out[current].append({"_not_failed": rec["task"], "status": rec["status"]})
    return out


# ------------------------------------------------------------------ snapshot
def _run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.stdout if proc.returncode == 0 else f"rc={proc.returncode}"


def _link(link: dict) -> dict:
    """The link's settings, without its counters and running timers."""
    out = {k: link.get(k) for k in ("ifname", "flags", "mtu", "master", "address", "operstate")}
    info = link.get("linkinfo", {})
    data = info.get("info_data", {})
    out["kind"] = info.get("info_kind")
    out["bridge"] = {k: v for k, v in data.items() if not k.endswith("_timer")} if out["kind"] == "bridge" else None
    return out


def _links(tag: str) -> list:
    data = json.loads(_run("ip", "-j", "-d", "link") or "[]")
    return sorted(
        (_link(link) for link in data if tag in link["ifname"] or link["ifname"] == "lxcbr0"),
        key=lambda link: link["ifname"],
    )


def _addrs(tag: str) -> list:
    data = json.loads(_run("ip", "-j", "addr") or "[]")
    return sorted(
        (
            {"ifname": a["ifname"], "addr": sorted(f"{i['local']}/{i['prefixlen']}" for i in a.get("addr_info", []))}
            for a in data
            if tag in a["ifname"] or a["ifname"] == "lxcbr0"
        ),
        key=lambda a: a["ifname"],
    )


def _nft(tag: str) -> list:
    text = _run("nft", "-j", "list", "ruleset")
    if text.startswith("rc="):
        return [text]
    items = json.loads(text or "{}").get("nftables", [])
    kept = []
    for item in items:
        body = next(iter(item.values()))
        table = body.get("table", body.get("name", "")) if isinstance(body, dict) else ""
        if tag in str(table) or "lxcbr0" in str(table):
            kept.append(json.dumps(item, sort_keys=True))
    return sorted(kept)


def _iptables(tag: str) -> list:
    lines = []
    for tool in ("iptables-save", "ip6tables-save"):
        lines += [
            line
            for line in _run(tool).splitlines()
            if not line.startswith("#") and (tag in line or "lxcbr0" in line or "KIOSK" in line.upper())
        ]
    return lines


def snapshot(conn, guests: list[str], tag: str, cgroup: Path, work: Path) -> dict:
    listed = sorted(
        line.split()[1] for line in _run("virsh", "-c", "lxc:///system", "list", "--all").splitlines()[2:]
        if len(line.split()) > 1 and line.split()[1].startswith(tag)
    )  # fmt: skip
    return {
        "guests": listed,
        "dumpxml": {g: _run("virsh", "-c", "lxc:///system", "dumpxml", g) for g in guests},
        "dumpxml_inactive": {g: _run("virsh", "-c", "lxc:///system", "dumpxml", "--inactive", g) for g in guests},
        "links": _links(tag),
        "addrs": _addrs(tag),
        "nft": _nft(tag),
        "iptables": _iptables(tag),
        "devices.list": (cgroup / "devices.list").read_text() if cgroup else None,
        "subid": {p: Path(p).read_text() if os.path.exists(p) else None for p in ("/etc/subuid", "/etc/subgid")},
        "work": sorted(str(p.relative_to(work)) for p in work.rglob("*")),
    }


def _devices_cgroup(name: str) -> Path | None:
    base = Path("/sys/fs/cgroup/devices/machine")
    found = [p for p in base.iterdir() if p.name.endswith(f"-{name}.libvirt-lxc")] if base.is_dir() else []
    return found[0] if found else None


# ------------------------------------------------------------------ the test
def test_table_has_forty_cases_across_modules_and_roles():
    cases = load_cases()
    assert len(cases) >= 40
    assert len({c["id"] for c in cases}) == len(cases)
    modules = {c["module"] for c in cases if "module" in c}
    roles = {c["role"] for c in cases if "role" in c}
    shipped = {f"kiosk.lxc.{p.stem}" for p in (REPO / "plugins" / "modules").glob("*.py")}
    assert shipped - {"kiosk.lxc.hotplug_agent"} <= modules | {"kiosk.lxc.lxc_domain_info"}, shipped - modules
    assert {"kiosk.lxc.guest", "kiosk.lxc.network", "kiosk.lxc.rootfs", "kiosk.lxc.host"} <= roles
    for c in cases:
        assert {"id", "option", "value", "expect"} <= set(c), c


def test_bad_input_fails_one_line_and_touches_nothing(libvirt_conn, guest_name, busybox_rootfs, tmp_path):
    tag = guest_name.split("-")[0]
    root = busybox_rootfs()
    dom = libvirt_conn.defineXML(guestlib.domain_xml(guest_name, root))
    dom.create()
    guestlib.wait_for_file(root / "out" / "started")
    cgroup = _devices_cgroup(guest_name)
    work = Path(f"/var/tmp/kiosk-bad-{guest_name}")
    base = guestlib.make_rootfs(work / "base")
    (base / ".kiosk-rootfs.json").write_text(json.dumps({"key": "busybox", "arch": "amd64", "networkd": False}))
    cases = load_cases()
    try:
        before = snapshot(libvirt_conn, [guest_name], tag, cgroup, work)
        pb = tmp_path / "bad.yml"
        pb.write_text(json.dumps(playbook(cases)), encoding="utf-8")
        proc, records = run_playbook(pb, extra_vars={"kt_guest": guest_name, "kt_tag": tag, "kt_work": str(work)})
        after = snapshot(libvirt_conn, [guest_name], tag, cgroup, work)
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert after == before

    results = outcomes(records, {c["id"] for c in cases if "module" in c})
    problems = []
    for case in cases:
        got = results.get(case["id"])
        if not got:
            problems.append(f"{case['id']}: did not run")
            continue
        if "_not_failed" in got[0] or len(got) != 1:
            problems.append(f"{case['id']}: did not fail as one task: {str(got)[:300]}")
            continue
        msg = str(got[0].get("msg", ""))
        msg = msg.removeprefix(CORE_HEADER)
        if "\n" in msg.strip():
            problems.append(f"{case['id']}: message is not one line: {msg!r}")
        if case["expect"] not in msg:
            problems.append(f"{case['id']}: {case['expect']!r} not in {msg!r}")
        named = re.search(rf"(?<![\w]){re.escape(case['option'])}(?![\w])", msg) is not None
        if case.get("defect"):
            # A known gap of another module, kept visible: this fails once the message names the option.
            if named:
                problems.append(f"{case['id']}: fixed ({msg!r}) - remove its `defect` entry from the table")
        elif not named:
            problems.append(f"{case['id']}: option {case['option']!r} not named in {msg!r}")
    assert not problems, "\n".join(problems)


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
