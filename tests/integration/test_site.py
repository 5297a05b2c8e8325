"""playbooks/site.yml on this machine, as `make demo` runs it: a real kiosk run.

The host role, a bridge with dnsmasq, a debootstrapped Debian base (cached in
/var/lib/kiosk-lxc/rootfs, so only the first run on a machine pays for it), a
guest cloned from it, booted with systemd and given its static lease. Then the
second run must change nothing. The bridge and subnet are the test's own
(not the demo's lxcbr0), without NAT: the only traffic is DHCP/DNS between the
guest and its bridge. The guest is removed at the end, the bridge too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from play import REPO, ansible_env, local_kiosk, run_module, run_playbook

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="provisions this machine: needs root")

BRIDGE = "ktsite0"
GUEST = "ktsite-player"
GUEST_IP = "10.213.77.10"


@pytest.fixture
def site_inventory(tmp_path, libvirt_daemon):
    guest = {"name": GUEST, "memory": "256MiB", "network": {"ip": GUEST_IP}, "sound": {"missing": "ignore"}}
    inv = local_kiosk(BRIDGE, "10.213.77.1/24", [guest])
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(inv))
    yield str(path)
    run_module("kiosk.lxc.lxc_domain", {"name": GUEST, "state": "absent"})
    run_module("kiosk.lxc.hotplug_agent", {"state": "absent"})
    run_module("kiosk.lxc.lxc_bridge", {"name": BRIDGE, "address": "10.213.77.1/24", "state": "absent"})
    shutil.rmtree(f"/var/lib/kiosk-lxc/guests/{GUEST}", ignore_errors=True)
    # The clone's record, beside it since rootfs records moved out of the guest's reach.
    Path(f"/var/lib/kiosk-lxc/guests/.kiosk-rootfs-{GUEST}.json").unlink(missing_ok=True)


def test_site_provisions_a_guest_that_boots_and_gets_its_lease_then_changes_nothing(site_inventory):
    first, records = run_playbook(REPO / "playbooks" / "site.yml", inventory=site_inventory)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    leases = Path(f"/var/lib/kiosk-lxc/{BRIDGE}.leases").read_text()
    assert GUEST_IP in leases and GUEST in leases

    second, records = run_playbook(REPO / "playbooks" / "site.yml", inventory=site_inventory)
    assert second.returncode == 0, second.stdout[-4000:]
    changed = [r["task"] for r in records if r["status"] == "changed"]
    assert changed == [], f"the second run changed: {changed}"

    # The fleet rollout over the same kiosk: each guest verified, nothing changed.
    rollout, records = run_playbook(REPO / "playbooks" / "rollout.yml", inventory=site_inventory)
    assert rollout.returncode == 0, rollout.stdout[-4000:]
    assert [r["task"] for r in records if r["status"] == "changed"] == []
    verified = [r for r in records if r["task"].startswith("Verify each guest")]
    assert verified and verified[0]["status"] == "ok", verified

    # A kiosk behind NAT runs the same playbooks with ansible-pull from its repository.
    with tempfile.TemporaryDirectory() as checkout, tempfile.NamedTemporaryFile(suffix=".jsonl") as rec:
        pull = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-pull"), "-U", str(REPO), "-d", checkout,
             "-i", site_inventory, "playbooks/pull.yml"],
            env=ansible_env(rec.name), capture_output=True, text=True, check=False,
        )  # fmt: skip
        records = [json.loads(line) for line in Path(rec.name).read_text().splitlines() if line.strip()]
    assert pull.returncode == 0, pull.stdout[-4000:] + pull.stderr[-2000:]
    assert any(r["task"] == "Provision the guests of this kiosk" for r in records), "pull.yml ran no guest task"
    assert [r["task"] for r in records if r["status"] == "changed"] == []
