"""Ansible inventory and molecule instance config for a set of kiosk VMs.

Written as YAML by hand (the harness needs only the standard library); every
scalar is JSON-quoted, which YAML reads as the same string.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SSH_COMMON_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"


@dataclass(frozen=True)
class Host:
    """How Ansible reaches one VM: SSH as root on a loopback port."""

    name: str
    port: int
    key: str
    address: str = "127.0.0.1"
    user: str = "root"

    def hostvars(self) -> dict[str, object]:
        return {
            "ansible_host": self.address,
            "ansible_port": self.port,
            "ansible_user": self.user,
            "ansible_ssh_private_key_file": self.key,
            "ansible_ssh_common_args": SSH_COMMON_ARGS,
            "ansible_python_interpreter": "/usr/bin/python3",
        }


def _scalar(v: object) -> str:
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else json.dumps(str(v))


def inventory_yaml(hosts: Iterable[Host], group: str = "kiosk_vms") -> str:
    """An Ansible YAML inventory: every VM in `group` under `all`."""
    lines = ["---", "all:", "  children:", f"    {json.dumps(group)}:", "      hosts:"]
    hosts = list(hosts)
    if not hosts:
        lines[-1] += " {}"
    for h in hosts:
        lines.append(f"        {json.dumps(h.name)}:")
        lines.extend(f"          {k}: {_scalar(v)}" for k, v in h.hostvars().items())
    return "\n".join(lines) + "\n"


def instance_config_yaml(hosts: Iterable[Host]) -> str:
    """Molecule's delegated-driver instance_config: a list of instance/address/port/..."""
    lines = ["---"]
    for h in hosts:
        lines += [
            f"- instance: {json.dumps(h.name)}",
            f"  address: {json.dumps(h.address)}",
            f"  port: {h.port}",
            f"  user: {json.dumps(h.user)}",
            f"  identity_file: {json.dumps(h.key)}",
        ]
    if len(lines) == 1:
        lines.append("[]")
    return "\n".join(lines) + "\n"


def write_inventory(path: str | Path, hosts: Iterable[Host], group: str = "kiosk_vms") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(inventory_yaml(hosts, group))
    tmp.replace(path)
    return path
