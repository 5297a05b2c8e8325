# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""lxc_bridge: NAT for the bridge's subnet, in objects only this module owns.

nftables: one table `inet kiosk_lxc_<bridge>`, replaced atomically as a whole
(`nft -f`), read back as JSON (`nft -j`). iptables: one chain
`KIOSK-LXC-<bridge>` in the nat table plus one jump to it from POSTROUTING,
read back in iptables' own rule-spec format (`-S`). Nothing else is flushed.
"""

from __future__ import annotations

import json

from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

BACKENDS = ("nftables", "iptables")


# ---------------------------------------------------------------- nftables
def nft_table(bridge: str) -> str:
    return f"kiosk_lxc_{bridge}"


def nft_script(spec) -> str:
    """Replaces (or creates) the bridge's table in one transaction; also the persistent file."""
    table = f"inet {nft_table(spec.name)}"
    net = spec.network.with_prefixlen
    return (
        "# Managed by kiosk.lxc.lxc_bridge: edits are overwritten.\n"
        f"table {table} {{}}\n"
        f"delete table {table}\n"
        f"table {table} {{\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f"    ip saddr {net} ip daddr != {net} masquerade\n"
        "  }\n"
        "}\n"
    )


def nft_expected(spec) -> dict:
    """What `nft -j list table` shows for nft_script(spec), without handles."""

    def match(op, field):
        return {
            "match": {
                "op": op,
                "left": {"payload": {"protocol": "ip", "field": field}},
                "right": {"prefix": {"addr": str(spec.network.network_address), "len": spec.network.prefixlen}},
            }
        }

    return {
        "chains": {
            "postrouting": {"type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"},
        },
        "rules": {"postrouting": [[match("==", "saddr"), match("!=", "daddr"), {"masquerade": None}]]},
    }


def nft_read(run, bridge: str) -> dict | None:
    """The bridge's table as {chains, rules}, or None when it does not exist."""
    rc, out, _err = run(["nft", "-j", "list", "table", "inet", nft_table(bridge)])
    if rc != 0:
        return None
    chains, rules = {}, {}
    for item in json.loads(out).get("nftables", []):
        if "chain" in item:
            c = item["chain"]
            chains[c["name"]] = {k: c.get(k) for k in ("type", "hook", "prio", "policy")}
        elif "rule" in item:
            r = item["rule"]
            rules.setdefault(r["chain"], []).append(r["expr"])
    return {"chains": chains, "rules": rules}


def nft_apply(run, spec) -> None:
    _check(run(["nft", "-f", "-"], data=nft_script(spec)), spec.name, "nft could not load the NAT table")


def nft_delete(run, bridge: str) -> None:
    _check(run(["nft", "delete", "table", "inet", nft_table(bridge)]), bridge, "nft could not delete the NAT table")


# ---------------------------------------------------------------- iptables
def ipt_chain(bridge: str) -> str:
    return f"KIOSK-LXC-{bridge}"


def ipt_expected(spec) -> dict:
    chain = ipt_chain(spec.name)
    net = spec.network.with_prefixlen
    return {"rules": [f"-N {chain}", f"-A {chain} -s {net} ! -d {net} -j MASQUERADE"], "jump": True}


def ipt_read(run, bridge: str) -> dict | None:
    chain = ipt_chain(bridge)
    rc, out, _err = run(["iptables", "-w", "-t", "nat", "-S", chain])
    if rc != 0:
        return None
    jump = run(["iptables", "-w", "-t", "nat", "-C", "POSTROUTING", "-j", chain])[0] == 0
    return {"rules": [line.strip() for line in out.splitlines() if line.strip()], "jump": jump}


def ipt_apply(run, spec, current: dict | None) -> None:
    chain = ipt_chain(spec.name)
    base = ["iptables", "-w", "-t", "nat"]
    if current is None:
        _check(run([*base, "-N", chain]), spec.name, f"iptables could not create chain {chain}")
    else:
        _check(run([*base, "-F", chain]), spec.name, f"iptables could not flush its own chain {chain}")
    net = spec.network.with_prefixlen
    _check(
        run([*base, "-A", chain, "-s", net, "!", "-d", net, "-j", "MASQUERADE"]),
        spec.name,
        f"iptables could not add the masquerade rule to {chain}",
    )
    if not (current and current.get("jump")):
        _check(run([*base, "-I", "POSTROUTING", "-j", chain]), spec.name, "iptables could not hook POSTROUTING")


def ipt_delete(run, bridge: str, current: dict) -> None:
    chain = ipt_chain(bridge)
    base = ["iptables", "-w", "-t", "nat"]
    while current.get("jump") and run([*base, "-D", "POSTROUTING", "-j", chain])[0] == 0:
        current["jump"] = run([*base, "-C", "POSTROUTING", "-j", chain])[0] == 0
    _check(run([*base, "-F", chain]), bridge, f"iptables could not flush its own chain {chain}")
    _check(run([*base, "-X", chain]), bridge, f"iptables could not delete its own chain {chain}")


# ---------------------------------------------------------------- both
def read(run, bridge: str, available: dict) -> dict:
    """{backend: state or None} for each backend whose tool is installed."""
    state = {}
    if available.get("nftables"):
        state["nftables"] = nft_read(run, bridge)
    if available.get("iptables"):
        state["iptables"] = ipt_read(run, bridge)
    return state


def resolve_backend(choice: str, available: dict, bridge: str) -> str:
    if choice == "auto":
        for backend in BACKENDS:
            if available.get(backend):
                return backend
        raise KioskError(f"Bridge '{bridge}': nat needs nft or iptables and neither is installed")
    if not available.get(choice):
        tool = "nft" if choice == "nftables" else "iptables"
        raise KioskError(f"Bridge '{bridge}': firewall '{choice}' needs the '{tool}' command, which is not installed")
    return choice


def matches(backend: str, current, spec) -> bool:
    if current is None:
        return False
    if backend == "nftables":
        return current == nft_expected(spec)
    return current == ipt_expected(spec)


def _check(result, bridge: str, what: str) -> None:
    rc, out, err = result
    if rc != 0:
        raise KioskError(f"Bridge '{bridge}': {what}: {(err or out).strip() or f'exit code {rc}'}", rc=rc)
