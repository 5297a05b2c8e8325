"""The inventory the harness writes is one Ansible reads as meant (checked with ansible-inventory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from kiosk_vm.inventory import Host, instance_config_yaml, inventory_yaml, write_inventory

HOSTS = [Host("kiosk-vm-0", 40022, "/cache/img/id_ed25519"), Host("kiosk-vm-1", 40023, "/k")]


def test_inventory_puts_every_vm_in_the_group_with_its_loopback_port():
    inv = yaml.safe_load(inventory_yaml(HOSTS, group="kiosks"))
    hosts = inv["all"]["children"]["kiosks"]["hosts"]
    assert list(hosts) == ["kiosk-vm-0", "kiosk-vm-1"]
    assert hosts["kiosk-vm-0"]["ansible_host"] == "127.0.0.1"
    assert hosts["kiosk-vm-0"]["ansible_port"] == 40022
    assert hosts["kiosk-vm-1"]["ansible_port"] == 40023
    assert hosts["kiosk-vm-0"]["ansible_user"] == "root"
    assert hosts["kiosk-vm-0"]["ansible_ssh_private_key_file"] == "/cache/img/id_ed25519"


def test_awkward_strings_survive_yaml():
    h = Host("vm: #1", 22, "/path with 'quotes' and: colons")
    inv = yaml.safe_load(inventory_yaml([h], group="g"))
    assert inv["all"]["children"]["g"]["hosts"]["vm: #1"]["ansible_ssh_private_key_file"] == (
        "/path with 'quotes' and: colons"
    )


def test_empty_fleet_is_a_valid_inventory():
    inv = yaml.safe_load(inventory_yaml([]))
    assert inv["all"]["children"]["kiosk_vms"]["hosts"] == {}


def test_ansible_reads_the_inventory(tmp_path):
    path = write_inventory(tmp_path / "sub" / "inventory.yml", HOSTS)
    ansible_inventory = Path(sys.executable).with_name("ansible-inventory")
    env = dict(os.environ, ANSIBLE_CONFIG=str(tmp_path / "none.cfg"))
    r = subprocess.run(
        [str(ansible_inventory), "-i", str(path), "--list"],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    data = json.loads(r.stdout)
    assert data["kiosk_vms"]["hosts"] == ["kiosk-vm-0", "kiosk-vm-1"]
    hv = data["_meta"]["hostvars"]["kiosk-vm-1"]
    assert (hv["ansible_host"], hv["ansible_port"], hv["ansible_user"]) == ("127.0.0.1", 40023, "root")
    assert "UserKnownHostsFile=/dev/null" in hv["ansible_ssh_common_args"]
    assert not list(path.parent.glob("*.tmp")), "the write is atomic (tmp + rename)"


def test_molecule_instance_config_lists_address_port_user_key():
    conf = yaml.safe_load(instance_config_yaml(HOSTS))
    assert conf[0] == {
        "instance": "kiosk-vm-0",
        "address": "127.0.0.1",
        "port": 40022,
        "user": "root",
        "identity_file": "/cache/img/id_ed25519",
    }
    assert yaml.safe_load(instance_config_yaml([])) == []
