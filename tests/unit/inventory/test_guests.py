"""The guests inventory's logic without libvirt: kiosk targets, hosts, groups, lease copies.

fetch_leases runs its real remote shell script, but through a local `sh -c`
instead of ssh (no SSH server here); ssh's own argv is checked separately.
"""

from __future__ import annotations

import subprocess

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import info
from ansible_collections.kiosk.lxc.plugins.module_utils.inventory import guests


def guest(name="player1", state="running", ips=("10.0.3.10",), metadata=None, sound=None):
    return {
        "name": name,
        "state": state,
        "interfaces": [
            {"type": "bridge", "source": "lxcbr0", "mac": "52:54:00:00:00:01", "ips": []},
            {"type": "bridge", "source": "lxcbr1", "mac": "52:54:00:00:00:02", "ips": list(ips)},
        ],
        "metadata": metadata or {},
        "sound": sound,
    }


def test_a_local_kiosk_is_read_on_lxc_system_and_a_remote_one_over_ssh():
    assert guests.kiosk_target("localhost", {"ansible_connection": "local"})["uri"] == "lxc:///system"
    remote = guests.kiosk_target("k1", {"ansible_host": "10.1.1.5", "ansible_port": 2222, "ansible_user": "admin"})
    assert remote == {
        "uri": "lxc+ssh://admin@10.1.1.5:2222/system",
        "local": False,
        "ssh": "admin@10.1.1.5",
        "port": 2222,
    }
    assert guests.kiosk_target("k2.example", {})["uri"] == "lxc+ssh://root@k2.example/system"
    assert guests.ssh_argv(remote, "true") == ["ssh", "-o", "BatchMode=yes", "-p", "2222", "admin@10.1.1.5", "true"]


def test_a_running_guest_gets_its_first_leased_address_and_a_stopped_one_none():
    assert guests.address(guest()) == "10.0.3.10"
    assert guests.address(guest(state="stopped")) is None
    assert guests.address(guest(ips=())) is None


def test_hosts_groups_and_variables_of_a_remote_kiosk():
    sound = {"profile": "udev_data", "selectors": [{"usb": "0c76:161f"}, {"id": "Device", "path": "x-1.2"}]}
    hosts = guests.guest_hosts(
        "kiosk-lobby-01",
        {"ansible_host": "10.1.1.5"},
        [guest(metadata={"role": "player"}, sound=sound), guest("spare", state="stopped")],
    )
    first, second = hosts
    assert first["name"] == "player1.kiosk-lobby-01"
    assert first["vars"]["ansible_host"] == "10.0.3.10"
    assert first["vars"]["ansible_ssh_common_args"] == "-o ProxyJump=root@10.1.1.5"
    assert first["vars"]["role"] == "player"
    assert first["vars"]["kiosk_guest"]["kiosk"] == "kiosk-lobby-01"
    assert first["groups"] == [
        "kiosk_kiosk_lobby_01",
        "state_running",
        "card_usb_0c76_161f",
        "card_id_Device_path_x_1_2",
    ]
    assert "ansible_host" not in second["vars"]
    assert second["groups"] == ["kiosk_kiosk_lobby_01", "state_stopped"]


def test_local_guests_need_no_jump_and_names_follow_the_template():
    hosts = guests.guest_hosts(
        "localhost", {"ansible_connection": "local"}, [guest()], hostname="{kiosk}-{guest}", proxy_jump=True
    )
    assert hosts[0]["name"] == "localhost-player1"
    assert "ansible_ssh_common_args" not in hosts[0]["vars"]
    assert guests.card_groups({"profile": "sysfs", "selectors": None}) == ["card_all"]


def _sh_instead_of_ssh(argv, **kwargs):
    kwargs.pop("check", None)
    return subprocess.run(["sh", "-c", argv[-1]], check=False, **kwargs)


def test_lease_files_are_copied_and_read_with_lxc_bridges_reader(tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "lxcbr0.leases").write_text("4102444800 52:54:00:AA:00:01 10.0.3.10 player1 *\n")
    (remote / "br 1.leases").write_text("")
    (remote / "other.conf").write_text("not copied")
    local = tmp_path / "local"
    local.mkdir()
    target = guests.kiosk_target("k1", {})
    names = guests.fetch_leases(target, str(remote), str(local), run=_sh_instead_of_ssh)
    assert names == ["br 1.leases", "lxcbr0.leases"]
    assert info.read_leases(str(local / "lxcbr0.leases")) == {"52:54:00:aa:00:01": ["10.0.3.10"]}


def test_a_kiosk_without_a_leases_dir_has_no_leases(tmp_path):
    names = guests.fetch_leases(
        guests.kiosk_target("k1", {}), str(tmp_path / "none"), str(tmp_path), run=_sh_instead_of_ssh
    )
    assert names == []


def test_ssh_failures_name_the_kiosk(tmp_path):
    def refused(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 255, b"", b"ssh: connect to host k1 port 22: Connection refused\n")

    with pytest.raises(KioskError, match=r"^Kiosk k1: cannot read the lease files over SSH from root@k1: ssh: connect"):
        guests.query_kiosk("k1", {}, "/var/lib/kiosk-lxc", tmp_dir=str(tmp_path), run=refused)
