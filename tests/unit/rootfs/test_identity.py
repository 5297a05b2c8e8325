"""Each clone gets its own machine-id and SSH host keys (plain Python, real files, the host's ssh-keygen)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.rootfs import build, identity

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen (openssh-client)")

TYPES = ("ed25519", "rsa")


def run(argv):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise KioskError(f"{argv[0]} failed: {proc.stderr}")


def make_base(cache: Path) -> Path:
    """A base rootfs with a record, one machine-id (dbus's a link to it, as Debian has it) and host keys."""
    base = cache / "base"
    (base / "etc" / "ssh").mkdir(parents=True)
    (base / "var" / "lib" / "dbus").mkdir(parents=True)
    (base / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (base / "var" / "lib" / "dbus" / "machine-id").symlink_to("/etc/machine-id")
    for kind in TYPES:
        key = base / "etc" / "ssh" / f"ssh_host_{kind}_key"
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(key)], check=True)
    build.write_record(str(base), {"key": "0" * 16, "method": "image", "arch": "amd64", "networkd": False})
    return base


def clone(cache: Path, base: Path, name: str) -> Path:
    d = build.desired({"method": "clone", "src": str(base), "name": name})
    build.apply(str(cache / "guests"), d, run)
    return cache / "guests" / name


def identity_of(root: Path) -> dict:
    ssh = root / "etc" / "ssh"
    return {
        "machine-id": (root / "etc" / "machine-id").read_text(),
        **{k: (ssh / f"ssh_host_{k}_key").read_text() for k in TYPES},
        **{f"{k}.pub": (ssh / f"ssh_host_{k}_key.pub").read_text().split()[1] for k in TYPES},
    }


def test_two_clones_of_one_base_share_no_host_key_and_no_machine_id(tmp_path):
    base = make_base(tmp_path)
    before = identity_of(base)
    a, b = (identity_of(clone(tmp_path, base, n)) for n in ("player1", "player2"))
    for field in before:
        assert len({before[field], a[field], b[field]}) == 3, field
    assert identity_of(base) == before, "the base must stay as it was"
    root = tmp_path / "guests" / "player1"
    assert len(a["machine-id"].strip()) == 32 and int(a["machine-id"], 16)
    assert (root / "etc" / "machine-id").stat().st_mode & 0o777 == 0o444
    assert (root / "var" / "lib" / "dbus" / "machine-id").is_symlink()  # still the link to /etc/machine-id
    key = root / "etc" / "ssh" / "ssh_host_ed25519_key"
    assert key.stat().st_mode & 0o777 == 0o600
    # The pair matches: the public key is the one of the new private key.
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True)
    assert derived.stdout.split()[1] == a["ed25519.pub"]
    assert (root / "etc" / "ssh" / "ssh_host_ed25519_key.pub").read_text().rstrip().endswith("root@player1")


def test_a_link_in_the_base_is_replaced_never_followed(tmp_path):
    """A host key name (or the machine-id) that is a link to a host file: the host file stays as it was."""
    base = make_base(tmp_path)
    host_file = tmp_path / "host-secret"
    host_file.write_text("host's own\n")
    host_file.chmod(0o640)
    ssh = base / "etc" / "ssh"
    (ssh / "ssh_host_rsa_key.pub").unlink()
    (ssh / "ssh_host_rsa_key.pub").symlink_to(host_file)
    (base / "etc" / "machine-id").unlink()
    (base / "etc" / "machine-id").symlink_to(host_file)
    root = clone(tmp_path, base, "player1")
    assert host_file.read_text() == "host's own\n" and host_file.stat().st_mode & 0o777 == 0o640
    assert not (root / "etc" / "ssh" / "ssh_host_rsa_key.pub").is_symlink()
    assert not (root / "etc" / "machine-id").is_symlink()
    assert (root / "etc" / "ssh" / "ssh_host_rsa_key.pub").read_text().startswith("ssh-rsa ")


def test_a_linked_etc_ssh_is_refused(tmp_path):
    base = make_base(tmp_path)
    target = tmp_path / "host-etc-ssh"
    shutil.move(base / "etc" / "ssh", target)
    (base / "etc" / "ssh").symlink_to(target)
    keys = sorted(p.name for p in target.iterdir())
    with pytest.raises(KioskError, match="etc/ssh"):
        identity.renew(str(base), "player1", run)
    assert sorted(p.name for p in target.iterdir()) == keys


def test_a_base_without_them_gets_none(tmp_path):
    (tmp_path / "etc").mkdir()
    assert identity.renew(str(tmp_path), "player1", run) == []
    assert sorted(p.name for p in (tmp_path / "etc").iterdir()) == []
