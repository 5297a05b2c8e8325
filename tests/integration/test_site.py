"""playbooks/site.yml on this machine, as `make demo` runs it: a real kiosk run.

The host role, a bridge with dnsmasq, a debootstrapped Debian base (cached in
/var/lib/kiosk-lxc/rootfs, so only the first run on a machine pays for it), a
guest cloned from it, booted with systemd and given its static lease. The
bridge and subnet are the test's own (not the demo's lxcbr0), without NAT: the
only traffic is DHCP/DNS between the guest and its bridge.

The runs cost minutes each, so the module makes each one once, in the order a
kiosk sees them (site, site again, rollout, ansible-pull), and keeps what it
returned; each test asks for the run it looks at and checks one behaviour, so
a failure in one run does not hide what the others show. The guest and the
bridge are removed after the last test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import machine
import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import device
from ansible_collections.kiosk.lxc.plugins.module_utils.common import shipped
from play import REPO, ansible_env, local_kiosk, run_module, run_playbook

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="provisions this machine: needs root")

BRIDGE = "ktsite0"
GUEST = "ktsite-player"
GUEST_IP = "10.213.77.10"
# The guest role's one task: kiosk.lxc.guest over the whole list.
TASK = "Provision the guests of this kiosk"


class Runs:
    """The playbook runs over one kiosk inventory, each made on first use and kept.

    Asking for a run makes the runs before it first, so the order on the
    machine is always the same whichever tests are selected.
    """

    def __init__(self, inventory: str):
        self.inventory = inventory
        self._done: dict[str, tuple[subprocess.CompletedProcess, list[dict]]] = {}

    def _once(self, name: str, make):
        if name not in self._done:
            self._done[name] = make()
        return self._done[name]

    def first(self):
        return self._once("first", lambda: run_playbook(REPO / "playbooks" / "site.yml", inventory=self.inventory))

    def second(self):
        self.first()
        return self._once("second", lambda: run_playbook(REPO / "playbooks" / "site.yml", inventory=self.inventory))

    def rollout(self):
        self.second()
        return self._once("rollout", lambda: run_playbook(REPO / "playbooks" / "rollout.yml", inventory=self.inventory))

    def pull(self):
        self.rollout()
        return self._once("pull", self._pull)

    def _pull(self):
        with tempfile.TemporaryDirectory() as checkout, tempfile.NamedTemporaryFile(suffix=".jsonl") as rec:
            proc = subprocess.run(
                [str(Path(sys.executable).parent / "ansible-pull"), "-U", str(REPO), "-d", checkout,
                 "-i", self.inventory, "playbooks/pull.yml"],
                env=ansible_env(rec.name), capture_output=True, text=True, check=False,
            )  # fmt: skip
            records = [json.loads(line) for line in Path(rec.name).read_text().splitlines() if line.strip()]
        return proc, records


def changed(records: list[dict]) -> list[str]:
    return [r["task"] for r in records if r["status"] == "changed"]


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout[-4000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, libvirt_daemon):
    guest = {"name": GUEST, "memory": "256MiB", "network": {"ip": GUEST_IP}, "sound": {"missing": "ignore"}}
    inv = local_kiosk(BRIDGE, "10.213.77.1/24", [guest])
    path = tmp_path_factory.mktemp("site") / "inventory.json"
    path.write_text(json.dumps(inv))
    # What site.yml installs machine-wide as a kiosk run does (the libvirt hook, the daemons' library, the
    # guest's subordinate ids) is put back as it was; the rootfs base stays, a cache kept on purpose.
    with machine.kept(device.hook_path(device.Host()), shipped.LIB_ROOT, "/etc/subuid", "/etc/subgid"):
        yield Runs(str(path))
        teardown()


def teardown():
    run_module("kiosk.lxc.lxc_domain", {"name": GUEST, "state": "absent"})
    run_module("kiosk.lxc.hotplug_agent", {"state": "absent"})
    run_module("kiosk.lxc.lxc_bridge", {"name": BRIDGE, "address": "10.213.77.1/24", "state": "absent"})
    shutil.rmtree(f"/var/lib/kiosk-lxc/guests/{GUEST}", ignore_errors=True)
    # The clone's record, beside it since rootfs records moved out of the guest's reach.
    Path(f"/var/lib/kiosk-lxc/guests/.kiosk-rootfs-{GUEST}.json").unlink(missing_ok=True)
    Path(f"/var/lib/kiosk-lxc/guests/.lock-{GUEST}").unlink(missing_ok=True)  # the clone's build lock


def test_site_converges_a_fresh_kiosk(runs):
    proc, records = runs.first()
    assert proc.returncode == 0, output(proc)
    assert TASK in changed(records), changed(records)


def test_the_guest_runs_and_holds_its_static_lease(runs, libvirt_daemon):
    runs.first()
    assert libvirt_daemon.lookupByName(GUEST).isActive()
    leases = Path(f"/var/lib/kiosk-lxc/{BRIDGE}.leases")
    assert leases.exists(), "dnsmasq wrote no leases file for the bridge"
    mine = [line for line in leases.read_text().splitlines() if f" {GUEST_IP} {GUEST} " in line]
    assert len(mine) == 1, leases.read_text()


def test_a_second_run_changes_nothing(runs):
    proc, records = runs.second()
    assert proc.returncode == 0, output(proc)
    assert changed(records) == [], f"the second run changed: {changed(records)}"


def test_rollout_verifies_each_guest_and_changes_nothing(runs):
    proc, records = runs.rollout()
    assert proc.returncode == 0, output(proc)
    assert changed(records) == []
    verified = [r for r in records if r["task"].startswith("Verify each guest")]
    assert verified and verified[0]["status"] == "ok", verified


def test_ansible_pull_runs_the_same_playbooks_and_changes_nothing(runs):
    """A kiosk behind NAT runs the same playbooks with ansible-pull from its repository."""
    proc, records = runs.pull()
    assert proc.returncode == 0, output(proc)
    assert any(r["task"] == TASK for r in records), "pull.yml ran no guest task"
    assert changed(records) == []
