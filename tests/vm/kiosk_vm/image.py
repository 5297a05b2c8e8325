"""The kiosk VM image: a bootable Debian disk built from packages, cached by its inputs.

An image is a directory in the cache named after the SHA-256 of everything that
goes into it (release, architecture, mirror, package list, the files the harness
writes into it, disk size, IMAGE_VERSION). It holds:

    disk.raw      ext4 filesystem of the whole root (``mkfs.ext4 -d``; no loop mount)
    vmlinuz       the kernel and initramfs copied out of the image's /boot,
    initrd.img    for qemu's -kernel/-initrd
    id_ed25519    the SSH key whose public half is root's authorized_keys
    manifest.json the inputs and how long the build took

A build happens in ``<key>.partial-*`` and is renamed to ``<key>`` only when
complete, so a half-built image is never used; a lock file serialises
concurrent builders of the same key. Nothing of the collection is installed; Debian packages the
host role would install are, when asked for (``--host-packages``, molecule ``default``).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import binfmt

# Bump when the build procedure changes in a way the inputs below do not show.
IMAGE_VERSION = 1

DEFAULT_CACHE_DIR = "/var/cache/kiosk-lxc/vm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# What a kiosk VM needs to boot and be managed by Ansible over SSH. alsa-utils
# is the harness's measuring instrument (arecord on the Loopback's far side),
# not something the collection installs.
PACKAGES = (
    "linux-image-amd64",  # packages_for(arch) puts the arch's own kernel here
    "initramfs-tools",
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    "openssh-server",
    "python3",
    "ifupdown",
    "isc-dhcp-client",
    "iproute2",
    "procps",
    "alsa-utils",
)

REPO = Path(__file__).resolve().parents[3]


def host_packages(bindep: Path = REPO / "bindep.txt") -> tuple[str, ...]:
    """What the host role installs on a kiosk (bindep.txt, profile host), read by the collection's one parser.

    An image with these preinstalled is a kiosk that already ran the host role's package step once:
    molecule `default` (in `make test`) boots it, so a converge does not spend minutes of TCG in apt;
    the other scenarios boot the bare image and prove the install itself.
    """
    out = subprocess.run(
        [sys.executable, str(REPO / "plugins/module_utils/common/bindep.py"), "host", str(bindep)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return tuple(out.stdout.split())


# Two real ALSA cards without hardware: snd-aloop (card "Loopback": what is
# played on hw:Loopback,0 can be recorded from hw:Loopback,1) and snd-dummy.
KERNEL_MODULES = ("snd-aloop", "snd-dummy")


@dataclass(frozen=True)
class SoundSetup:
    """How an image gets its two ALSA cards: modules loaded at boot, their options, the card ids."""

    modules: tuple[str, ...]
    cards: tuple[str, str]  # the card a guest is given in the scenarios, and the one it must not open
    modprobe_options: str = ""  # /etc/modprobe.d/kiosk-vm.conf, if any


def sound_setup(arch: str) -> SoundSetup:
    """Debian's arm64 kernel has snd-aloop but no snd-dummy (CONFIG_SND_DUMMY is not set in
    config-6.1.0-*-arm64): there the second card is a second snd-aloop instance, id Spare."""
    if arch == "arm64":
        return SoundSetup(
            modules=("snd-aloop",),
            cards=("Loopback", "Spare"),
            modprobe_options="options snd-aloop enable=1,1 index=0,1 id=Loopback,Spare\n",
        )
    return SoundSetup(modules=KERNEL_MODULES, cards=("Loopback", "Dummy"))


def packages_for(arch: str) -> tuple[str, ...]:
    """PACKAGES with the kernel of `arch` (linux-image-arm64, ...)."""
    return tuple(f"linux-image-{arch}" if p.startswith("linux-image-") else p for p in PACKAGES)


# Units that only cost boot time under TCG in a throwaway VM.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
)

HOSTNAME = "kiosk-vm"


def image_files(release: str, mirror: str, security_mirror: str | None, arch: str = "amd64") -> dict[str, str]:
    """Files the harness writes into the root filesystem, path -> content."""
    sound = sound_setup(arch)
    sources = [f"deb {mirror} {release} main", f"deb {mirror} {release}-updates main"]
    if security_mirror:
        sources.append(f"deb {security_mirror} {release}-security main")
    return {
        "/etc/hostname": f"{HOSTNAME}\n",
        "/etc/hosts": f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n::1\tlocalhost\n",
        "/etc/fstab": "LABEL=kiosk-root / ext4 rw,errors=remount-ro 0 0\n",
        "/etc/apt/sources.list": "\n".join(sources) + "\n",
        # Kernel cmdline has net.ifnames=0: the one NIC is eth0 (qemu user-mode NAT).
        "/etc/network/interfaces": ("auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n"),
        "/etc/modules-load.d/kiosk-vm.conf": "".join(f"{m}\n" for m in sound.modules),
        **({"/etc/modprobe.d/kiosk-vm.conf": sound.modprobe_options} if sound.modprobe_options else {}),
        "/etc/ssh/sshd_config.d/kiosk-vm.conf": "PermitRootLogin prohibit-password\nUseDNS no\n",
        # qemu boots the kernel and initramfs copied into the cache (-kernel/-initrd):
        # regenerating the VM's own initramfs (libvirt's packages trigger it) is
        # minutes of wasted TCG time.
        "/etc/initramfs-tools/update-initramfs.conf": "update_initramfs=no\nbackup_initramfs=no\n",
        # Empty: systemd makes a fresh machine-id on each VM's first boot.
        "/etc/machine-id": "",
    }


@dataclass(frozen=True)
class ImageSpec:
    """Everything an image is built from; its hash names the image in the cache."""

    release: str = "bookworm"
    arch: str = "amd64"
    mirror: str = DEFAULT_MIRROR
    security_mirror: str | None = None
    packages: tuple[str, ...] = ()  # () = packages_for(arch)
    # Installed by the image's own apt once debootstrap is done (host_packages(): the host role's list);
    # debootstrap --include cannot configure them (polkitd's postinst fails there).
    apt_packages: tuple[str, ...] = ()
    disk_size: str = "3G"
    version: int = IMAGE_VERSION
    files: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if not self.packages:
            object.__setattr__(self, "packages", packages_for(self.arch))
        if not self.files:
            object.__setattr__(self, "files", image_files(self.release, self.mirror, self.security_mirror, self.arch))

    @property
    def sound(self) -> SoundSetup:
        return sound_setup(self.arch)

    def inputs(self) -> dict:
        d = asdict(self)
        d["packages"] = sorted(set(self.packages))
        d["apt_packages"] = sorted(set(self.apt_packages))
        d["kernel_modules"] = list(self.sound.modules)
        d["masked_units"] = sorted(MASKED_UNITS)
        return d

    def key(self) -> str:
        blob = json.dumps(self.inputs(), sort_keys=True, separators=(",", ":"))
        return f"{self.release}-{self.arch}-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


# ------------------------------------------------------------------ apt mirror
def _deb822_stanzas(text: str):
    stanza: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if not line.strip():
            if stanza:
                yield stanza
            stanza, last = {}, None
        elif line.lstrip().startswith("#"):
            continue
        elif line[0].isspace() and last:
            stanza[last] += " " + line.strip()
        elif ":" in line:
            k, v = line.split(":", 1)
            last = k.strip().lower()
            stanza[last] = v.strip()
    if stanza:
        yield stanza


def apt_sources(etc_apt: str | Path = "/etc/apt") -> list[tuple[str, str, list[str]]]:
    """(uri, suite, components) of every ``deb`` source apt uses, in apt's file order."""
    etc_apt = Path(etc_apt)
    out: list[tuple[str, str, list[str]]] = []
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*"))]
    for f in files:
        if not f.is_file():
            continue
        text = f.read_text(errors="replace")
        if f.suffix == ".sources":
            for st in _deb822_stanzas(text):
                if "deb" not in st.get("types", "").split():
                    continue
                if st.get("enabled", "yes").lower() == "no":
                    continue
                for uri in st.get("uris", "").split():
                    for suite in st.get("suites", "").split():
                        out.append((uri, suite, st.get("components", "").split()))
        elif f.name == "sources.list" or f.suffix == ".list":
            for line in text.splitlines():
                words = line.split("#", 1)[0].split()
                if not words or words[0] != "deb":
                    continue
                words = words[1:]
                if words and words[0].startswith("["):  # [ options ]
                    while words and not words[0].endswith("]"):
                        words = words[1:]
                    words = words[1:]
                if len(words) >= 2:
                    out.append((words[0], words[1], words[2:]))
    return out


def find_mirrors(release: str, etc_apt: str | Path = "/etc/apt") -> tuple[str, str | None]:
    """The Debian mirror (and security mirror) this machine's apt uses for `release`."""
    mirror = security = None
    for uri, suite, components in apt_sources(etc_apt):
        if "main" not in components:
            continue
        if suite == release and mirror is None:
            mirror = uri.rstrip("/")
        elif suite in (f"{release}-security", f"{release}/updates") and security is None:
            security = uri.rstrip("/")
    return mirror or DEFAULT_MIRROR, security


# ------------------------------------------------------------------ the build
def file_in(directory: str, name: str) -> property:
    """A read-only property: the file `name` in the directory held by the attribute `directory`."""
    return property(lambda self: getattr(self, directory) / name, doc=f"{directory}/{name}")


@dataclass
class Image:
    """A built image in the cache."""

    path: Path

    disk = file_in("path", "disk.raw")
    kernel = file_in("path", "vmlinuz")
    initrd = file_in("path", "initrd.img")
    ssh_key = file_in("path", "id_ed25519")

    @property
    def manifest(self) -> dict:
        return json.loads((self.path / "manifest.json").read_text())

    @property
    def arch(self) -> str:
        """The Debian architecture it was built for (amd64 for an image without a manifest)."""
        try:
            return self.manifest["inputs"]["arch"]
        except (OSError, KeyError, ValueError):
            return "amd64"

    def complete(self) -> bool:
        return all(
            p.is_file() for p in (self.disk, self.kernel, self.initrd, self.ssh_key, self.path / "manifest.json")
        )


def _log(msg: str) -> None:
    print(f"kiosk-vm: {msg}", flush=True)


def _run(cmd: list[str], **kw) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if r.returncode:
        tail = (r.stdout + r.stderr).strip().splitlines()[-25:]
        raise RuntimeError(f"{cmd[0]} failed with exit {r.returncode}:\n" + "\n".join(tail))


def _unmount_below(root: Path) -> None:
    """Lazily unmount whatever is still mounted under root (deepest first)."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for mp in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], check=False, capture_output=True)


def remove_tree(path: Path) -> None:
    """rm -rf that never follows a mount it finds below path into another filesystem."""
    if not path.exists():
        return
    _unmount_below(path)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def write_rootfs_files(rootfs: Path, spec: ImageSpec, pubkey: str) -> None:
    """Configure the debootstrapped tree from the host side (no chroot needed)."""
    for path, content in spec.files.items():
        target = rootfs / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            target.unlink()
        target.write_text(content)
    ssh = rootfs / "root/.ssh"
    ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh / "authorized_keys").write_text(pubkey)
    (ssh / "authorized_keys").chmod(0o600)
    for unit in MASKED_UNITS:
        link = rootfs / "etc/systemd/system" / unit
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("/dev/null")
    # The Debian default is no root password; lock it anyway, SSH keys only.
    shadow = rootfs / "etc/shadow"
    lines = shadow.read_text().splitlines()
    shadow.write_text(
        "\n".join(("root:!*:" + ln.split(":", 2)[2]) if ln.startswith("root:") else ln for ln in lines) + "\n"
    )
    # Downloaded packages only make the disk bigger.
    for deb in glob.glob(str(rootfs / "var/cache/apt/archives/*.deb")):
        os.unlink(deb)


def apt_install(rootfs: Path, packages, arch: str = "amd64") -> None:
    """Install packages in the finished tree with its own apt, as the host role would on a kiosk.

    In a private mount namespace (its /proc goes with it), with a policy-rc.d that starts no
    service, and the downloaded .debs removed after.
    """
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    root = shlex.quote(str(rootfs))
    script = (
        f"mount -t proc proc {root}/proc && chroot {root} apt-get update -qq"
        f" && DEBIAN_FRONTEND=noninteractive chroot {root} apt-get install -y -qq --no-install-recommends "
        + " ".join(shlex.quote(p) for p in sorted(set(packages)))
        + f" && chroot {root} apt-get clean"
    )
    try:
        if arch != binfmt.host_arch() and binfmt.private_supported(arch):
            _run(binfmt.private_command(arch, ["sh", "-c", script]))
        else:
            with binfmt.foreign(arch):
                _run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script])
    finally:
        policy.unlink()


def check_kernel_modules(rootfs: Path, modules: tuple[str, ...]) -> None:
    """Every module the image loads at boot is in its kernel (a missing one would only show as a missing card)."""
    found = {
        Path(p).name.split(".ko")[0].replace("_", "-")
        for p in glob.glob(str(rootfs / "lib/modules/*/kernel/**/*.ko*"), recursive=True)
    }
    missing = [m for m in modules if m.replace("_", "-") not in found]
    if missing:
        raise RuntimeError(f"the image's kernel has no module {', '.join(missing)} (in {rootfs}/lib/modules)")


def _build_into(tmp: Path, spec: ImageSpec) -> dict:
    timings: dict[str, float] = {}
    rootfs = tmp / "rootfs"
    t = time.monotonic()
    _log(f"debootstrap {spec.release}/{spec.arch} from {spec.mirror} (about 2 min; 12 min or more for a foreign arch)")
    debootstrap = [
        "debootstrap", "--variant=minbase", f"--arch={spec.arch}",
        "--include=" + ",".join(sorted(set(spec.packages))),
        spec.release, str(rootfs), spec.mirror,
    ]  # fmt: skip
    if spec.arch != binfmt.host_arch() and binfmt.private_supported(spec.arch):
        # Its own user, mount and pid namespaces with a binfmt_misc of their own: nothing of the
        # machine's binfmt_misc changes, and what debootstrap mounts dies with it.
        _run(binfmt.private_command(spec.arch, debootstrap))
    else:
        # A private mount namespace: whatever debootstrap mounts (proc, sys) in the
        # target disappears with it, even if it is killed half way.
        with binfmt.foreign(spec.arch):
            _run(["unshare", "--mount", "--propagation", "private", *debootstrap])
    timings["debootstrap_s"] = round(time.monotonic() - t, 1)
    check_kernel_modules(rootfs, spec.sound.modules)

    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kiosk-vm-harness",
          "-f", str(tmp / "id_ed25519")])  # fmt: skip
    write_rootfs_files(rootfs, spec, (tmp / "id_ed25519.pub").read_text())
    if spec.apt_packages:
        t = time.monotonic()
        _log(f"apt-get install {len(spec.apt_packages)} packages in the image (the host role's)")
        apt_install(rootfs, spec.apt_packages, spec.arch)
        timings["apt_install_s"] = round(time.monotonic() - t, 1)

    kernels = sorted(glob.glob(str(rootfs / "boot/vmlinuz-*")))
    initrds = sorted(glob.glob(str(rootfs / "boot/initrd.img-*")))
    if not kernels or not initrds:
        raise RuntimeError(f"no kernel/initrd in {rootfs}/boot after debootstrap")
    shutil.copyfile(kernels[-1], tmp / "vmlinuz")
    shutil.copyfile(initrds[-1], tmp / "initrd.img")

    t = time.monotonic()
    _log(f"mkfs.ext4 -d rootfs disk.raw {spec.disk_size}")
    _run(["mkfs.ext4", "-q", "-F", "-L", "kiosk-root", "-d", str(rootfs),
          str(tmp / "disk.raw"), spec.disk_size])  # fmt: skip
    timings["mkfs_s"] = round(time.monotonic() - t, 1)
    remove_tree(rootfs)
    return {
        "key": spec.key(),
        "inputs": spec.inputs(),
        "kernel": Path(kernels[-1]).name,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "timings": timings,
    }


def build_cached(cache: Path, key: str, complete: Callable[[Path], bool], build: Callable[[Path], None]) -> Path:
    """cache/key, made first by build(tmp) unless complete(cache/key) says it is there.

    build writes into a new ``<key>.partial-*`` directory, renamed to ``<key>`` only when build
    returns, so a half-built result is never used; a lock file serialises concurrent builders of
    the same key; leftovers of builds that died before the rename are removed, never used.
    """
    cache.mkdir(parents=True, exist_ok=True)
    done = cache / key
    if complete(done):
        return done
    with open(cache / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it
        if complete(done):
            return done
        for old in cache.glob(f"{key}.partial-*"):
            remove_tree(old)
        if done.exists():  # incomplete (should not happen: rename is atomic)
            remove_tree(done)
        tmp = Path(tempfile.mkdtemp(prefix=f"{key}.partial-", dir=cache))
        try:
            build(tmp)
            os.rename(tmp, done)
        except BaseException:
            with contextlib.suppress(Exception):
                remove_tree(tmp)
            raise
    return done


def ensure_image(spec: ImageSpec, cache_dir: str | Path = DEFAULT_CACHE_DIR) -> Image:
    """The image for spec from the cache, built first if it is not there."""

    def build(tmp: Path) -> None:
        t = time.monotonic()
        manifest = _build_into(tmp, spec)
        manifest["timings"]["total_s"] = round(time.monotonic() - t, 1)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _log(f"image {spec.key()} built in {manifest['timings']['total_s']} s")

    return Image(build_cached(Path(cache_dir), spec.key(), lambda p: Image(p).complete(), build))
