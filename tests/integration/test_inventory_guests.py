"""The kiosk.lxc.guests inventory plugin against the real libvirtd, through ansible-inventory.

Two busybox guests on a bridge of the test's own. Their DHCP leases are lines
the test writes into a lease file it owns (in lxc_bridge's format) instead of
a dnsmasq answering a DHCP client: busybox guests run no DHCP client, and the
address is read from that file either way. The kiosk is this machine
(ansible_connection local). A second kiosk on 127.0.0.1 port 1 stands for an
unreachable remote kiosk: nothing listens there, so lxc+ssh/ssh fail at once.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import guest as guestlib
import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.namespaces import (
    META_NS,
    META_PREFIX,
    SOUND_NS,
    SOUND_PREFIX,
)
from play import ansible_env
from scratch_bridge import scratch_bridge

MAC_A = "52:54:00:6b:10:0a"
MAC_B = "52:54:00:6b:10:0b"


@pytest.fixture
def bridge():
    """A bridge of this test's own (no address, no traffic)."""
    with scratch_bridge("ktin") as name:
        yield name


def _define(conn, name, root, bridge, mac, *, metadata=""):
    iface = f"<interface type='bridge'><mac address='{mac}'/><source bridge='{bridge}'/></interface>"
    xml = guestlib.domain_xml(name, root, extra_devices=iface)
    if metadata:
        xml = xml.replace("<memory", f"<metadata>{metadata}</metadata><memory", 1)
    dom = conn.defineXML(xml)
    dom.create()
    return dom


def inventory(tmp_path: Path, *extra: str) -> dict:
    cmd = [
        str(Path(sys.executable).parent / "ansible-inventory"),
        "-i", str(tmp_path / "kiosks.yml"),
        "-i", str(tmp_path / "guests.kiosk.lxc.yml"),
        "--list", *extra,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=ansible_env(), capture_output=True, text=True, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Values from libvirt are not trusted as templates: ansible-inventory marks them __ansible_unsafe.
    data = json.loads(proc.stdout, object_hook=lambda d: d.get("__ansible_unsafe", d))
    data["_stderr"] = proc.stderr
    return data


def members(data: dict, group: str) -> set:
    return set(data.get(group, {}).get("hosts", []))


def test_guests_are_hosts_with_their_leased_address_groups_and_metadata(
    libvirt_conn, guest_name, busybox_rootfs, tmp_path, bridge
):
    name_a, name_b = f"{guest_name}-a", f"{guest_name}-b"
    meta = (
        f"<{META_PREFIX}:metadata xmlns:{META_PREFIX}='{META_NS}'>"
        f"<{META_PREFIX}:item key='role'>player</{META_PREFIX}:item></{META_PREFIX}:metadata>"
        f"<{SOUND_PREFIX}:sound xmlns:{SOUND_PREFIX}='{SOUND_NS}' profile='udev_data' missing='fail'>"
        f"<{SOUND_PREFIX}:select usb='0c76:161f'/></{SOUND_PREFIX}:sound>"
    )
    _define(libvirt_conn, name_a, busybox_rootfs(name="a"), bridge, MAC_A, metadata=meta)
    dom_b = _define(libvirt_conn, name_b, busybox_rootfs(name="b"), bridge, MAC_B)
    leases = tmp_path / "leases"
    leases.mkdir()
    expiry = int(time.time()) + 3600
    (leases / f"{bridge}.leases").write_text(
        f"{expiry} {MAC_A} 10.213.0.11 {name_a} *\n{expiry} {MAC_B} 10.213.0.12 * *\n", encoding="utf-8"
    )
    (tmp_path / "kiosks.yml").write_text(
        "kiosks:\n  hosts:\n"
        "    localhost: {ansible_connection: local}\n"
        "    kiosk-far: {ansible_host: 127.0.0.1, ansible_port: 1}\n",
        encoding="utf-8",
    )
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "kiosk-far.yml").write_text("ansible_user: kioskadmin\n", encoding="utf-8")
    (tmp_path / "guests.kiosk.lxc.yml").write_text(
        "plugin: kiosk.lxc.guests\n"
        f"leases_dir: {leases}\n"
        "cache: true\n"
        "cache_plugin: ansible.builtin.jsonfile\n"
        f"cache_connection: {tmp_path / 'cache'}\n"
        "cache_timeout: 3600\n"
        "keyed_groups:\n  - {key: kiosk_guest.metadata.role | default('none'), prefix: role}\n",
        encoding="utf-8",
    )

    data = inventory(tmp_path, "--flush-cache")
    host_a, host_b = f"{name_a}.localhost", f"{name_b}.localhost"
    hostvars = data["_meta"]["hostvars"]
    assert hostvars[host_a]["ansible_host"] == "10.213.0.11"
    assert hostvars[host_b]["ansible_host"] == "10.213.0.12"
    # This machine's guests are reached over the bridge, not through a jump host.
    assert "ansible_ssh_common_args" not in hostvars[host_a]
    assert {host_a, host_b} <= members(data, "guests")
    assert {host_a, host_b} <= members(data, "kiosk_localhost")
    assert {host_a, host_b} <= members(data, "state_running")
    assert members(data, "card_usb_0c76_161f") & {host_a, host_b} == {host_a}
    assert host_a in members(data, "role_player") and host_b in members(data, "role_none")
    assert hostvars[host_a]["role"] == "player"  # metadata as variables
    assert hostvars[host_a]["kiosk_guest"]["sound"] == {"profile": "udev_data", "selectors": [{"usb": "0c76:161f"}]}
    assert hostvars[host_b]["kiosk_guest"]["interfaces"][0]["mac"] == MAC_B
    # The unreachable kiosk is reported and left out; the other one still answers.
    # (with the ansible_user of its host_vars/: vars plugins are read for the kiosks)
    assert "Kiosk kiosk-far: cannot read the lease files over SSH from kioskadmin@127.0.0.1" in data["_stderr"]
    assert "its guests are left out" in data["_stderr"]
    assert not [h for h in hostvars if h.endswith(".kiosk-far")]

    # Stopped: from the cache nothing changes until it is refreshed.
    dom_b.destroy()
    cached = inventory(tmp_path)
    assert cached["_meta"]["hostvars"][host_b]["ansible_host"] == "10.213.0.12"
    fresh = inventory(tmp_path, "--flush-cache")
    assert "ansible_host" not in fresh["_meta"]["hostvars"][host_b]
    assert host_b in members(fresh, "state_stopped")
    assert host_b not in members(fresh, "state_running")
    assert fresh["_meta"]["hostvars"][host_a]["ansible_host"] == "10.213.0.11"


def _this_kiosk(tmp_path: Path, bridge: str, lease: str) -> None:
    """This machine as the one kiosk, and one lease line ("MAC IP HOSTNAME") in a lease file of the test's."""
    leases = tmp_path / "leases"
    leases.mkdir()
    (leases / f"{bridge}.leases").write_text(f"{int(time.time()) + 3600} {lease} *\n")
    (tmp_path / "kiosks.yml").write_text("kiosks:\n  hosts:\n    localhost: {ansible_connection: local}\n")
    (tmp_path / "guests.kiosk.lxc.yml").write_text(f"plugin: kiosk.lxc.guests\nleases_dir: {leases}\n")


def _ansible(tmp_path: Path, pattern: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        str(Path(sys.executable).parent / "ansible"),
        "-i", str(tmp_path / "kiosks.yml"), "-i", str(tmp_path / "guests.kiosk.lxc.yml"), pattern, *args,
    ]  # fmt: skip
    return subprocess.run(cmd, env=ansible_env(), capture_output=True, text=True, check=False, cwd=tmp_path)


def _sshd_binary() -> Path | None:
    """The host's sshd, or one named by KIOSK_TEST_SSHD (e.g. unpacked from openssh-server's .deb)."""
    for candidate in (os.environ.get("KIOSK_TEST_SSHD"), "/usr/sbin/sshd"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _ssh_guest_rootfs(root: Path, sshd: Path, ip: str, pubkey: str) -> Path:
    """A rootfs that uses the host's /usr (bound read-only) and runs sshd as init on eth0 = ip."""
    for d in ("etc/ssh", "root/.ssh", "run/sshd", "tmp", "dev", "proc", "sys", "var/empty", "opt/ssh", "out", "usr"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "lib", "lib64", "sbin"):
        (root / link).symlink_to(f"usr/{link}")
    shutil.copy2(sshd, root / "opt/ssh/sshd")
    libs = sshd.parent.parent / "lib"  # libraries unpacked beside a KIOSK_TEST_SSHD binary, if any
    if libs.is_dir() and sshd != Path("/usr/sbin/sshd"):
        shutil.copytree(libs, root / "opt/ssh/lib", symlinks=True)
    etc = root / "etc"
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n")
    (etc / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (etc / "nsswitch.conf").write_text("passwd: files\ngroup: files\nshadow: files\n")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(etc / "ssh/host_key")], check=True)
    (etc / "ssh/sshd_config").write_text(
        "HostKey /etc/ssh/host_key\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "AuthorizedKeysFile /root/.ssh/authorized_keys\nUsePAM no\nStrictModes no\nPidFile none\n"
    )
    (root / "root/.ssh/authorized_keys").write_text(pubkey)
    init = root / "init"
    init.write_text(
        "#!/bin/sh\nexport PATH=/usr/sbin:/usr/bin\n"
        f"ip link set lo up && ip addr add {ip}/24 dev eth0 && ip link set eth0 up\n"
        "exec env LD_LIBRARY_PATH=/opt/ssh/lib /opt/ssh/sshd -D -e -f /etc/ssh/sshd_config"
        " > /out/sshd.log 2>&1\n"
    )
    init.chmod(0o755)
    return root


def test_ansible_reaches_a_running_guest_through_the_inventory(libvirt_conn, guest_name, tmp_path, bridge):
    """`ansible -i kiosks.yml -i guests.kiosk.lxc.yml ... -m ping` against a real sshd in a guest.

    Skipped when this machine has no sshd binary (openssh-server is not installed here, since
    installing it would start an sshd on the host): set KIOSK_TEST_SSHD to an sshd unpacked from
    the openssh-server package (dpkg-deb -x), with its extra libraries in <dir>/../lib.
    """
    sshd = _sshd_binary()
    if sshd is None:
        pytest.skip("no sshd binary (install openssh-server or set KIOSK_TEST_SSHD)")
    net = f"10.213.{secrets.randbelow(200) + 20}"
    subprocess.run(["ip", "addr", "add", f"{net}.1/24", "dev", bridge], check=True)
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    root = _ssh_guest_rootfs(tmp_path / "rootfs", sshd, f"{net}.20", (tmp_path / "key.pub").read_text())
    usr = "<filesystem type='mount'><source dir='/usr'/><target dir='/usr'/><readonly/></filesystem>"
    iface = f"<interface type='bridge'><mac address='{MAC_A}'/><source bridge='{bridge}'/></interface>"
    libvirt_conn.defineXML(guestlib.domain_xml(guest_name, root, memory_mib=128, extra_devices=usr + iface)).create()
    log = root / "out" / "sshd.log"
    deadline = time.monotonic() + 15
    while "Server listening" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "Server listening" in log.read_text()
    _this_kiosk(tmp_path, bridge, f"{MAC_A} {net}.20 *")
    # only this test's guest: never other people's
    proc = _ansible(tmp_path, f"guests:&{guest_name}.localhost", "-m", "ansible.builtin.ping", "-u", "root",
                    "--private-key", str(key))  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{guest_name}.localhost | SUCCESS" in proc.stdout
    assert "ping: pong" in proc.stdout  # the yaml result format of ansible.cfg


def test_a_template_in_a_guests_metadata_is_never_run(libvirt_conn, guest_name, busybox_rootfs, tmp_path, bridge):
    """A guest's root can write its domain's metadata (through whoever manages it) and its DHCP
    lease's host name: the inventory hands them over as data. A playbook that prints the
    variables must not run the lookup they hold. (ansible-core 2.19 trusts no inventory value as
    a template by itself; 2.16 to 2.18, which the collection supports, template what is not
    marked unsafe: run this test with such an ansible-core to see the difference.)
    """
    planted = tmp_path / "planted"
    payload = "{{ lookup('pipe', 'touch " + str(planted) + "') }}"
    meta = (
        f"<{META_PREFIX}:metadata xmlns:{META_PREFIX}='{META_NS}'>"
        f"<{META_PREFIX}:item key='role'>{payload}</{META_PREFIX}:item></{META_PREFIX}:metadata>"
    )
    _define(libvirt_conn, guest_name, busybox_rootfs(), bridge, MAC_A, metadata=meta)
    _this_kiosk(tmp_path, bridge, f"{MAC_A} 10.213.0.11 {guest_name}")
    proc = _ansible(tmp_path, f"{guest_name}.localhost", "-m", "ansible.builtin.debug",
                    "-a", "msg={{ [role, kiosk_guest] }}")  # fmt: skip
    assert not planted.exists(), "the guest's metadata ran a command on the controller"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lookup(" in proc.stdout and str(planted) in proc.stdout  # printed as the text it is
