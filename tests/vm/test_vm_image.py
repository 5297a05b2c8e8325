"""The image's cache key, the apt mirror lookup, and the atomic build.

The build tests replace debootstrap + mkfs (`_build_into`) with a stand-in that
writes the image's files or fails: a real build takes two minutes and needs the
Debian mirror (tests/vm/kiosk-vm smoke runs the real one). Everything else here
is the real code.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from kiosk_vm import cli
from kiosk_vm import image as imagemod
from kiosk_vm.image import ImageSpec, apt_sources, ensure_image, find_mirrors, host_packages


# ----------------------------------------------------------------- cache key
def test_key_is_stable_and_names_release_and_arch():
    assert ImageSpec().key() == ImageSpec().key()
    assert ImageSpec().key().startswith("bookworm-amd64-")


def test_key_ignores_package_order_and_duplicates():
    a = ImageSpec(packages=("python3", "udev", "systemd"))
    b = ImageSpec(packages=("systemd", "python3", "udev", "udev"))
    assert a.key() == b.key()


@pytest.mark.parametrize(
    "change",
    [
        {"release": "trixie"},
        {"arch": "arm64"},
        {"mirror": "http://mirror.example/debian"},
        {"security_mirror": "http://deb.debian.org/debian-security"},
        {"packages": (*imagemod.PACKAGES, "pulseaudio")},
        {"disk_size": "4G"},
        {"apt_packages": ("nftables",)},
        {"version": imagemod.IMAGE_VERSION + 1},
        {"files": {"/etc/hostname": "other\n"}},
    ],
    ids=lambda c: next(iter(c)),
)
def test_key_changes_with_every_input(change):
    assert ImageSpec(**change).key() != ImageSpec().key()


def test_key_changes_when_a_file_written_into_the_image_changes(monkeypatch):
    before = ImageSpec().key()
    monkeypatch.setattr(imagemod, "KERNEL_MODULES", ("snd-aloop",))
    assert ImageSpec().key() != before


def test_image_loads_both_sound_modules_at_boot():
    conf = ImageSpec().files["/etc/modules-load.d/kiosk-vm.conf"].split()
    assert conf == ["snd-aloop", "snd-dummy"]


def test_nothing_of_the_collection_is_preinstalled():
    pkgs = set(ImageSpec().packages)
    assert not pkgs & {"libvirt-daemon-system", "libvirt-daemon-driver-lxc", "dnsmasq-base"}


def test_host_packages_are_what_bindep_gives_the_host_role(tmp_path):
    bindep = tmp_path / "bindep.txt"
    bindep.write_text("libvirt-clients [platform:dpkg host test]\ngcc [platform:dpkg test]\nnftables [host]\n")
    assert host_packages(bindep) == ("libvirt-clients", "nftables")
    assert "libvirt-daemon-driver-lxc" in host_packages()


def test_host_packages_make_another_image(monkeypatch):
    monkeypatch.delenv("KIOSK_VM_HOST_PACKAGES", raising=False)
    bare = cli.parser().parse_args(["build"])
    monkeypatch.setenv("KIOSK_VM_HOST_PACKAGES", "true")
    provisioned = cli.parser().parse_args(["build"])
    assert not bare.host_packages and provisioned.host_packages
    monkeypatch.setattr(cli, "find_mirrors", lambda release: ("http://mirror.local/debian", None))
    assert cli._spec(bare).key() != cli._spec(provisioned).key()
    assert cli._spec(provisioned).apt_packages == host_packages() and not cli._spec(bare).apt_packages


# ----------------------------------------------------------------- apt mirror
def _etc_apt(tmp_path: Path, sources_list: str = "", **parts: str) -> Path:
    (tmp_path / "sources.list.d").mkdir(parents=True)
    (tmp_path / "sources.list").write_text(sources_list)
    for name, text in parts.items():
        (tmp_path / "sources.list.d" / name.replace("_", ".")).write_text(text)
    return tmp_path


DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.local/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.local/debian-security
Suites: bookworm-security
Components: main
"""


def test_mirror_from_deb822_sources_ignores_third_party_repos(tmp_path):
    etc = _etc_apt(
        tmp_path,
        a_list="deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n",
        debian_sources=DEB822,
        z_sources="Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\nComponents: main\n",
    )
    assert find_mirrors("bookworm", etc) == (
        "http://mirror.local/debian",
        "http://mirror.local/debian-security",
    )


def test_mirror_from_one_line_sources_list_with_options(tmp_path):
    etc = _etc_apt(
        tmp_path,
        "# deb http://commented.out/debian bookworm main\n"
        "deb-src http://src.only/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://ftp.de.debian.org/debian bookworm main contrib\n"
        "deb http://security.debian.org/debian-security bookworm-security main\n",
    )
    assert find_mirrors("bookworm", etc) == (
        "http://ftp.de.debian.org/debian",
        "http://security.debian.org/debian-security",
    )


def test_disabled_deb822_stanza_is_skipped(tmp_path):
    etc = _etc_apt(tmp_path, debian_sources="Enabled: no\n" + DEB822)
    # The first stanza is disabled; the security one still counts.
    assert find_mirrors("bookworm", etc) == (
        imagemod.DEFAULT_MIRROR,
        "http://mirror.local/debian-security",
    )


def test_no_debian_source_falls_back_to_deb_debian_org(tmp_path):
    assert find_mirrors("bookworm", _etc_apt(tmp_path)) == (imagemod.DEFAULT_MIRROR, None)


def test_this_machines_apt_has_a_debian_mirror():
    """The harness uses the mirror this machine's apt uses (the only one reachable here)."""
    uris = [u for u, suite, comps in apt_sources() if suite == "bookworm" and "main" in comps]
    assert find_mirrors("bookworm")[0] == uris[0].rstrip("/")


# ----------------------------------------------------------------- atomic build
def _fake_build(tmp: Path, spec: ImageSpec) -> dict:
    for name in ("disk.raw", "vmlinuz", "initrd.img", "id_ed25519"):
        (tmp / name).write_text(name)
    return {"key": spec.key(), "timings": {}}


def test_build_lands_in_the_cache_under_its_key_and_is_reused(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(imagemod, "_build_into", lambda t, s: calls.append(t) or _fake_build(t, s))
    spec = ImageSpec()
    img = ensure_image(spec, tmp_path)
    assert img.path == tmp_path / spec.key()
    assert img.complete()
    assert json.loads((img.path / "manifest.json").read_text())["key"] == spec.key()
    assert ensure_image(spec, tmp_path).path == img.path
    assert len(calls) == 1, "a cached image must not be rebuilt"
    assert not list(tmp_path.glob("*.partial-*"))


def test_failed_build_leaves_no_image_and_no_partial(tmp_path, monkeypatch):
    def broken(tmp, spec):
        _fake_build(tmp, spec)
        (tmp / "vmlinuz").unlink()
        raise RuntimeError("debootstrap failed with exit 1")

    monkeypatch.setattr(imagemod, "_build_into", broken)
    with pytest.raises(RuntimeError, match="debootstrap"):
        ensure_image(ImageSpec(), tmp_path)
    assert not (tmp_path / ImageSpec().key()).exists()
    assert not list(tmp_path.glob("*.partial-*"))


def test_leftover_partial_and_incomplete_image_are_never_used(tmp_path, monkeypatch):
    spec = ImageSpec()
    (tmp_path / f"{spec.key()}.partial-old").mkdir()
    half = tmp_path / spec.key()
    half.mkdir()
    (half / "disk.raw").write_text("half")  # no kernel, no manifest
    monkeypatch.setattr(imagemod, "_build_into", _fake_build)
    img = ensure_image(spec, tmp_path)
    assert img.complete()
    assert (img.disk).read_text() == "disk.raw"
    assert not (tmp_path / f"{spec.key()}.partial-old").exists()


def test_rootfs_files_key_and_masked_units(tmp_path):
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\ndaemon:*:19000::::::\n")
    (root / "var/cache/apt/archives").mkdir(parents=True)
    (root / "var/cache/apt/archives/x.deb").write_text("")
    imagemod.write_rootfs_files(root, ImageSpec(), "ssh-ed25519 AAAA test\n")
    assert (root / "root/.ssh/authorized_keys").read_text() == "ssh-ed25519 AAAA test\n"
    assert (root / "root/.ssh/authorized_keys").stat().st_mode & 0o077 == 0
    assert (root / "etc/modules-load.d/kiosk-vm.conf").read_text() == "snd-aloop\nsnd-dummy\n"
    assert (root / "etc/shadow").read_text().startswith("root:!*:19000:")
    assert str((root / "etc/systemd/system/apt-daily.timer").readlink()) == "/dev/null"
    assert not (root / "var/cache/apt/archives/x.deb").exists()


# ----------------------------------------------------------------- arm64
def test_arm64_image_has_the_arm64_kernel_and_the_same_packages_otherwise():
    amd64, arm64 = ImageSpec(), ImageSpec(arch="arm64")
    assert "linux-image-arm64" in arm64.packages and "linux-image-amd64" not in arm64.packages
    assert set(arm64.packages) - {"linux-image-arm64"} == set(amd64.packages) - {"linux-image-amd64"}
    assert arm64.key().startswith("bookworm-arm64-")


def test_arm64_second_card_is_a_second_loopback_as_its_kernel_has_no_snd_dummy(tmp_path):
    spec = ImageSpec(arch="arm64")
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    imagemod.write_rootfs_files(root, spec, "ssh-ed25519 AAAA test\n")
    assert (root / "etc/modules-load.d/kiosk-vm.conf").read_text() == "snd-aloop\n"
    options = (root / "etc/modprobe.d/kiosk-vm.conf").read_text().split()
    assert options[:2] == ["options", "snd-aloop"]
    assert "id=Loopback,Spare" in options and "enable=1,1" in options
    assert spec.sound.cards == ("Loopback", "Spare")
    assert spec.inputs()["kernel_modules"] == ["snd-aloop"]


def test_amd64_image_writes_no_module_options():
    assert "/etc/modprobe.d/kiosk-vm.conf" not in ImageSpec().files
    assert ImageSpec().sound.cards == ("Loopback", "Dummy")


def _kernel_tree(root: Path, *modules: str) -> Path:
    for m in modules:
        ko = root / "lib/modules/6.1.0-50-arm64/kernel/sound/drivers" / m
        ko.parent.mkdir(parents=True, exist_ok=True)
        ko.write_bytes(b"")
    return root


def test_a_module_missing_from_the_images_kernel_fails_the_build(tmp_path):
    """As debootstrap of Debian's arm64 kernel gives it: snd-aloop.ko, no snd-dummy.ko."""
    root = _kernel_tree(tmp_path, "snd-aloop.ko")
    imagemod.check_kernel_modules(root, ("snd-aloop",))
    with pytest.raises(RuntimeError, match="no module snd-dummy"):
        imagemod.check_kernel_modules(root, ("snd-aloop", "snd-dummy"))


def test_compressed_modules_count(tmp_path):
    imagemod.check_kernel_modules(_kernel_tree(tmp_path, "snd-aloop.ko.xz"), ("snd-aloop",))


def test_image_arch_comes_from_its_manifest(tmp_path, monkeypatch):
    monkeypatch.setattr(imagemod, "_build_into", _fake_build_with_inputs)
    monkeypatch.setattr(imagemod.binfmt, "foreign", _no_binfmt)
    assert ensure_image(ImageSpec(arch="arm64"), tmp_path).arch == "arm64"
    assert ensure_image(ImageSpec(), tmp_path).arch == "amd64"
    assert imagemod.Image(tmp_path / "none").arch == "amd64"


@pytest.mark.parametrize("private", [True, False], ids=["own-binfmt-namespace", "machine-binfmt"])
def test_a_foreign_debootstrap_runs_where_arm64_programs_run_and_leaves_the_machine_as_it_was(
    tmp_path, monkeypatch, private
):
    """debootstrap itself is replaced (it takes 12 min); which way it is run, and the undo on failure, are real."""
    seen = []

    @contextlib.contextmanager
    def foreign(arch):
        seen.append(f"enable {arch}")
        try:
            yield {}
        finally:
            seen.append(f"undo {arch}")

    def run(cmd, **kw):
        seen.append("debootstrap " + ("in its own namespaces" if cmd[0] != "unshare" else "in a mount namespace"))
        assert "--arch=arm64" in cmd
        raise RuntimeError("debootstrap failed with exit 1")

    monkeypatch.setattr(imagemod.binfmt, "foreign", foreign)
    monkeypatch.setattr(imagemod.binfmt, "private_supported", lambda arch: private)
    monkeypatch.setattr(imagemod, "_run", run)
    with pytest.raises(RuntimeError, match="debootstrap"):
        ensure_image(ImageSpec(arch="arm64"), tmp_path)
    if private:
        assert seen == ["debootstrap in its own namespaces"]
    else:
        assert seen == ["enable arm64", "debootstrap in a mount namespace", "undo arm64"]
    assert not list(tmp_path.glob("*.partial-*"))


def _fake_build_with_inputs(tmp: Path, spec: ImageSpec) -> dict:
    return {**_fake_build(tmp, spec), "inputs": spec.inputs()}


@contextlib.contextmanager
def _no_binfmt(arch):
    yield {}
