# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Guest root filesystems, built once per definition and never half-used.

A rootfs is named by what defines it (method, release, architecture, mirror,
packages, image checksum, guest OS configuration): the same definition maps to
the same directory, so a second run finds it and does nothing. A build goes
into a hidden sibling directory and is renamed into place only when complete,
with its record written beside it; a killed build leaves only the hidden
directory, which the next run removes and redoes. A lock file serialises
concurrent runs on one host.

The record (`.kiosk-rootfs-<name>.json` in the cache directory, owned by
host root) says which definition the directory was built from. It lives
outside the rootfs: a clone is a guest's own root, and a record inside it
(`/.kiosk-rootfs.json`, where 0.1 kept it) is the guest's to rewrite or
delete, which made the next run stop or wipe the guest's state by
re-cloning. Such an old record is read once, through common.guestfs (no
link followed), and copied out (`adopt`); from then on only the copy counts.
A clone directory with no record at all is refused, never replaced.

Copying the record out is bookkeeping of this cache, like its lock files:
it changes no guest (the guest's root is left byte for byte as it was, its
definition and run state are not touched), so plan() lists it under
`housekeeping`, not `actions`, and it does not count as a change: a kiosk
provisioned by 0.1 is adopted with `changed=0`. apply() does it whenever
plan() lists it, in a real run; check mode lists it and leaves it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import stat
import struct
import tarfile

from ansible_collections.kiosk.lxc.plugins.module_utils.common import files, guestfs, text
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.rootfs import identity
from ansible_collections.kiosk.lxc.plugins.module_utils.rootfs import idmap as idmaplib

# Where kiosk.lxc 0.1 kept the record: inside the rootfs, in the guest's reach. Read only to adopt it.
MANIFEST = ".kiosk-rootfs.json"
FORMAT_VERSION = 2
METHODS = ("debootstrap", "image", "distrobuilder", "clone")
AUDIO_STACKS = {
    "none": [],
    "pulseaudio": ["pulseaudio", "pulseaudio-utils", "alsa-utils"],
    "pipewire": ["pipewire", "pipewire-pulse", "wireplumber", "pulseaudio-utils", "alsa-utils"],
}
# Debian architecture names by kernel machine name.
DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf", "i686": "i386"}
QEMU_BINFMT = {"arm64": "qemu-aarch64", "armhf": "qemu-arm", "amd64": "qemu-x86_64", "i386": "qemu-i386"}
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PKG_RE = re.compile(r"[a-z0-9][a-z0-9.+-]+")

NETWORKD_UNIT = """\
# Written by kiosk.lxc: DHCP on the guest's first interface.
[Match]
Name=eth0

[Network]
DHCP=yes
"""


BINFMT_DIR = "/proc/sys/fs/binfmt_misc"


def host_deb_arch() -> str:
    machine = platform.machine()
    return DEB_ARCH.get(machine, machine)


def desired(params: dict) -> dict:
    """Validate the user's options into a definition; raise KioskError before anything is touched."""
    method = params["method"]
    if method not in METHODS:
        raise KioskError(f"method: '{method}' is not one of {', '.join(METHODS)}")
    if params.get("idmap") and method != "clone":
        raise KioskError("idmap: only a clone (method clone) is shifted to a guest's ids")
    name = params.get("name") or ""
    if name and not NAME_RE.fullmatch(name):
        raise KioskError(f"name: {text.quote(name)} may hold only letters, digits, '.', '_' and '-' (64 at most)")
    arch = params.get("arch") or host_deb_arch()
    if arch not in QEMU_BINFMT:
        raise KioskError(f"arch: '{arch}' is not one of {', '.join(sorted(QEMU_BINFMT))}")
    audio = params.get("audio") or "none"
    if audio not in AUDIO_STACKS:
        raise KioskError(f"audio: '{audio}' is not one of {', '.join(AUDIO_STACKS)}")
    packages = sorted(set(params.get("packages") or []))
    bad = [p for p in packages if not PKG_RE.fullmatch(p)]
    if bad:
        raise KioskError(f"packages: {text.quote(bad[0])} is not a Debian package name")
    user = params.get("user") or ""
    if user and not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
        raise KioskError(f"user: {text.quote(user)} is not a valid user name")
    d = {
        "format": FORMAT_VERSION,
        "method": method,
        "arch": arch,
        "audio": audio,
        "user": user,
        "networkd": bool(params.get("networkd", True)),
    }
    if method == "debootstrap":
        d.update(
            release=params.get("release") or "bookworm",
            mirror=params.get("mirror") or "http://deb.debian.org/debian",
            variant=params.get("variant") or "minbase",
            packages=packages,
        )
    elif method == "image":
        src = params.get("src") or ""
        sha256 = (params.get("sha256") or "").lower()
        if not src:
            raise KioskError("src: the image method needs src, a rootfs.tar.xz path or URL")
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise KioskError("sha256: the image method needs the image's sha256 (64 hex digits)")
        if not src.startswith(("http://", "https://")) and not os.path.isfile(src):
            raise KioskError(f"src: {src} does not exist")
        if packages:
            raise KioskError("packages: the image method installs no packages; use debootstrap or distrobuilder")
        d.update(src=src, sha256=sha256)
    elif method == "clone":
        src = params.get("src") or ""
        base = read_manifest(src) if src else None
        if base is None:
            where = record_path(src) if src else "its record"
            raise KioskError(f"src: {src or '(none)'} is not a rootfs built by kiosk.lxc.rootfs (no {where})")
        hostname = params.get("hostname") or name
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", hostname or ""):
            raise KioskError(f"hostname: {text.quote(hostname)} is not a valid host name")
        if packages:
            raise KioskError("packages: a clone installs no packages; give them to the base rootfs")
        # A clone inherits the base's guest OS settings.
        d.update(
            src=src,
            base_key=base["key"],
            hostname=hostname,
            arch=base.get("arch", arch),
            audio=base.get("audio", audio),
            user=base.get("user", user),
            networkd=base.get("networkd", True),
        )
        # An idmapped clone (idmap.py): owners shifted into the guest's subordinate range.
        shifted = idmaplib.validate(params.get("idmap"))
        if shifted:
            d["idmap"] = shifted
    else:
        definition = params.get("definition") or ""
        if not os.path.isfile(definition):
            raise KioskError(f"definition: distrobuilder definition file {definition or '(none)'} does not exist")
        with open(definition, "rb") as fh:
            d.update(definition=definition, definition_sha256=hashlib.sha256(fh.read()).hexdigest())
    d["key"] = cache_key(d)
    d["name"] = name or f"{d.get('release', method)}-{arch}-{d['key']}"
    return d


def cache_key(d: dict) -> str:
    significant = {k: v for k, v in d.items() if k not in ("key", "name", "definition", "src")}
    if d["method"] == "clone":
        significant["src"] = d["src"]
    if d["method"] == "image":
        significant["sha256"] = d["sha256"]
    blob = json.dumps(significant, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def record_path(path: str) -> str:
    """The record of the rootfs directory path: beside it, out of the guest's reach."""
    path = os.path.normpath(path)
    return os.path.join(os.path.dirname(path), f".kiosk-rootfs-{os.path.basename(path)}.json")


def _read_json(text: str | None) -> dict | None:
    try:
        value = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_record(path: str) -> tuple[dict | None, bool]:
    """(the record of the rootfs at path or None, whether it is an old one still inside the rootfs).

    A record counts only beside a directory that exists (a build writes the
    record, then renames its directory into place).
    """
    if not os.path.isdir(path):
        return None, False
    try:
        with open(record_path(path), encoding="utf-8") as fh:
            return _read_json(fh.read()), False
    except FileNotFoundError:
        pass
    except OSError:
        return None, False
    try:
        legacy = _read_json(guestfs.read_file(path, MANIFEST))
    except (guestfs.GuestPathError, OSError):
        legacy = None  # a link planted where 0.1 kept it: no record
    return legacy, legacy is not None


def read_manifest(path: str) -> dict | None:
    """The definition the rootfs at path was built from, or None."""
    return read_record(path)[0]


def write_record(path: str, d: dict) -> None:
    files.write_atomic(record_path(path), json.dumps(d, indent=2, sort_keys=True) + "\n", mode=0o644)


def adopt(path: str, record: dict) -> None:
    """An old record inside the rootfs, copied beside it; the rootfs itself is left as it is.

    The old file stays in the guest's root, which is the guest's: nothing reads it once the copy exists
    (read_record() looks beside the rootfs first), and removing it would change the guest.
    """
    write_record(path, record)


def plan(cache_dir: str, d: dict, state: str = "present", binfmt_dir: str = BINFMT_DIR) -> dict:
    """What would change: {changed, actions, path, before, after}.

    ``binfmt_dir`` is where the kernel's binfmt_misc entries are read (a foreign-arch build needs one).
    """
    final = os.path.join(cache_dir, d["name"])
    manifest, legacy = read_record(final)
    current = manifest.get("key") if manifest else None
    stale = sorted(e for e in _list(cache_dir) if e.startswith(f".build-{d['name']}-"))
    actions = [f"remove interrupted build {os.path.join(cache_dir, s)}" for s in stale]
    if state == "absent":
        if os.path.exists(final):
            actions.append(f"remove {final}")
        return _result(actions, final, current, None)
    chores = [f"copy the record of {final} out of it to {record_path(final)}"] if legacy else []
    if current == d["key"]:
        return _result(actions, final, current, d["key"], chores)
    if d["method"] == "clone" and manifest is not None and manifest.get("idmap") != d.get("idmap"):
        raise KioskError(
            f"idmap: the clone {final} is owned for idmap {manifest.get('idmap')}, not {d.get('idmap')};"
            " it holds the guest's state, so it is not re-owned behind its back (remove it to re-clone)"
        )
    if d["method"] == "clone" and manifest is not None:
        # A guest's own rootfs holds the guest's state: never replaced behind its back.
        return _result(actions, final, current, current, chores)
    if d["method"] == "clone" and os.path.lexists(final):
        raise KioskError(
            f"name: {final} exists and has no record {record_path(final)}; it may hold a guest's state,"
            " so it is not replaced by a new clone (remove it to re-clone)"
        )
    if d["method"] == "debootstrap" and d["arch"] != host_deb_arch():
        _check_binfmt(d["arch"], binfmt_dir)  # before anything is touched, and in check mode too
    if d["method"] == "distrobuilder" and not shutil.which("distrobuilder"):
        raise KioskError("method: distrobuilder is not installed on this host")
    if os.path.exists(final):
        actions.append(f"replace {final} (it was built from another definition)")
    actions.append(f"build {final} with {d['method']}")
    return _result(actions, final, current, d["key"], chores)


def _result(actions, path, before, after, housekeeping=()):
    """housekeeping: what apply() does that changes nothing of the rootfs (not counted in changed)."""
    return {
        "changed": bool(actions),
        "actions": actions,
        "housekeeping": list(housekeeping),
        "path": path,
        "before": before,
        "after": after,
    }


def _list(path):
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def restrict(cache_dir: str) -> None:
    """The cache directory is root's alone (0700): the rootfs under it hold setuid-root programs
    built for guests, which no host user may reach. An existing directory is tightened."""
    os.makedirs(cache_dir, mode=0o700, exist_ok=True)
    st = os.stat(cache_dir)
    if st.st_mode & 0o077 and not _acl_users(cache_dir):
        os.chmod(cache_dir, stat.S_IMODE(st.st_mode) & 0o700)


# POSIX ACLs as the kernel stores them (linux/posix_acl_xattr.h): version 2, then (tag, perm, id)
# entries sorted by tag and id. An idmapped guest's root is an unprivileged host uid that must
# pass through the 0700 cache directory to its own rootfs: it is given search (x) there, alone.
_ACL_XATTR = "system.posix_acl_access"
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_MASK, _ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_ACL_UNDEFINED_ID = 0xFFFFFFFF


def _acl_users(path: str) -> dict[int, int]:
    """{uid: perm} of the named-user entries of path's access ACL."""
    try:
        raw = os.getxattr(path, _ACL_XATTR)
    except OSError:
        return {}
    entries = [struct.unpack_from("<HHI", raw, off) for off in range(4, len(raw), 8)]
    return {eid: perm for tag, perm, eid in entries if tag == _ACL_USER}


def grant_search(cache_dir: str, uid: int) -> None:
    """Give uid search permission on cache_dir (and nothing else), keeping the ACL's other users.

    Guests are cloned side by side (the guest module, concurrent runs): the ACL is read, extended and
    written back under an exclusive lock on the directory itself, so no grant is lost to another.
    """
    fd = os.open(cache_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _grant_search(cache_dir, uid)
    finally:
        os.close(fd)


def _grant_search(cache_dir: str, uid: int) -> None:
    users = _acl_users(cache_dir)
    if users.get(uid) == 1:
        return
    users[uid] = 1
    owner = (stat.S_IMODE(os.stat(cache_dir).st_mode) >> 6) & 7
    entries = [(_ACL_USER_OBJ, owner, _ACL_UNDEFINED_ID)]
    entries += [(_ACL_USER, perm, u) for u, perm in sorted(users.items())]
    entries += [(_ACL_GROUP_OBJ, 0, _ACL_UNDEFINED_ID), (_ACL_MASK, 1, _ACL_UNDEFINED_ID)]
    entries += [(_ACL_OTHER, 0, _ACL_UNDEFINED_ID)]
    blob = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
    try:
        os.setxattr(cache_dir, _ACL_XATTR, blob)
    except OSError as exc:
        raise KioskError(
            f"idmap: cannot let the guest's root (uid {uid}) pass through {cache_dir}: {exc.strerror}"
            " (the file system needs POSIX ACLs)"
        ) from exc


@contextlib.contextmanager
def locked(cache_dir: str, name: str):
    """An exclusive lock per rootfs name: concurrent runs wait for each other."""
    restrict(cache_dir)
    with open(os.path.join(cache_dir, f".lock-{name}"), "w", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def apply(cache_dir: str, d: dict, run, state: str = "present", fetch=None) -> dict:
    """Carry out plan().

    run(argv) runs a command and raises KioskError when it fails; fetch(url,
    dest) downloads a URL to a file (the module passes Ansible's open_url, so
    proxies and CA settings are the controller's usual ones).
    """
    with locked(cache_dir, d["name"]):
        p = plan(cache_dir, d, state)  # again, under the lock: another run may have built it
        final = p["path"]
        for entry in _list(cache_dir):
            if entry.startswith(f".build-{d['name']}-"):
                shutil.rmtree(os.path.join(cache_dir, entry), ignore_errors=True)
        if state == "absent":
            shutil.rmtree(final, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(record_path(final))
            return p
        manifest, legacy = read_record(final)
        if legacy:
            adopt(final, manifest)
        if not p["changed"] or p["before"] == p["after"]:
            return p
        if d.get("idmap"):
            grant_search(cache_dir, d["idmap"]["uid"])
        work = os.path.join(cache_dir, f".build-{d['name']}-{os.getpid()}")
        os.makedirs(work)
        try:
            BUILDERS[d["method"]](work, d, run, fetch)
            if d["method"] != "clone":
                configure(work, d, run)
            # The record first, then the directory: a record counts only beside its directory,
            # so a build killed in between is redone, never taken for finished.
            old = None
            if os.path.lexists(final):
                old = f"{work}.old"
                os.rename(final, old)
            write_record(final, d)
            os.rename(work, final)
            if old:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return p


def tarball_path(path: str) -> str:
    return f"{path}.tar.xz"


def plan_pack(path: str) -> list[str]:
    """The action that packs a rootfs as <path>.tar.xz, unless that tarball is there and newer."""
    tarball = tarball_path(path)
    try:
        if os.stat(tarball).st_mtime >= os.stat(_record_file(path)).st_mtime:
            return []
    except FileNotFoundError:
        pass
    return [f"pack {tarball}"]


def _record_file(path: str) -> str:
    """The record's file, beside the rootfs (or inside it, for one built before records moved out)."""
    outside = record_path(path)
    return outside if os.path.exists(outside) else os.path.join(path, MANIFEST)


def pack(path: str, run) -> tuple[str, str]:
    """Pack the rootfs at path as <path>.tar.xz (atomically) if needed; returns (tarball, sha256)."""
    tarball = tarball_path(path)
    if plan_pack(path):
        tmp = f"{tarball}.tmp-{os.getpid()}"
        try:
            # xz -1 on every core: packing is on the critical path of a controller build
            # (-6, tar's default, took 8 min for a 554 MB base under load, for 10 % less).
            run(["tar", "-C", path, "--numeric-owner", "-I", "xz -T0 -1", "-cf", tmp, "."])
            os.rename(tmp, tarball)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    digest = hashlib.sha256()
    with open(tarball, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return tarball, digest.hexdigest()


def _debootstrap(work: str, d: dict, run, _fetch=None) -> None:
    include = sorted(set(d["packages"]) | set(AUDIO_STACKS[d["audio"]]) | _config_packages(d))
    argv = ["debootstrap", f"--variant={d['variant']}", f"--arch={d['arch']}"]
    if include:
        argv.append("--include=" + ",".join(include))
    argv += [d["release"], work, d["mirror"]]
    run(argv)


def _config_packages(d: dict) -> set[str]:
    pkgs = set()
    if d["networkd"]:
        # networkd hands the DNS server of its DHCP lease to resolved over D-Bus;
        # logind (libpam-systemd, D-Bus) starts the kiosk user's own systemd,
        # which starts the user's sound server.
        pkgs.update(("systemd", "systemd-sysv", "systemd-resolved", "dbus", "libpam-systemd"))
    if d["user"]:
        pkgs.add("passwd")
    return pkgs


def _check_binfmt(arch: str, binfmt_dir: str = BINFMT_DIR) -> None:
    """A foreign-arch debootstrap runs the new rootfs's programs (chroot) through qemu-user-static.

    debootstrap runs both stages in one pass when the kernel runs them by itself: the
    binfmt_misc entry must be enabled and have the F (fix binary) flag, which opens the
    interpreter when it is registered, so that it is found from inside the chroot too.
    """
    name = QEMU_BINFMT[arch]
    entry = os.path.join(binfmt_dir, name)
    try:
        with open(entry, encoding="utf-8") as fh:
            lines = [line.strip() for line in fh]
    except OSError:
        lines = []
    if lines[:1] != ["enabled"]:
        raise KioskError(
            f"arch: building an {arch} rootfs on a {host_deb_arch()} host needs qemu-user-static with "
            f"binfmt_misc ({entry} is not enabled): install qemu-user-static and binfmt-support, and where no "
            f"service manager did it, run 'mount -t binfmt_misc binfmt_misc {binfmt_dir}' (if {binfmt_dir} is "
            f"empty) and 'update-binfmts --enable {name}'"
        )
    flags = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("flags:")), "")
    if "F" not in flags:
        raise KioskError(
            f"arch: the binfmt_misc entry {entry} has no F (fix binary) flag, so {arch} programs cannot run "
            f"inside the new rootfs: register {name} as Debian's qemu-user-static does ('update-binfmts "
            f"--disable {name}' then 'update-binfmts --enable {name}')"
        )


def _image(work: str, d: dict, _run, fetch=None) -> None:
    src = d["src"]
    local = src
    if src.startswith(("http://", "https://")):
        local = f"{work}.download"
        if fetch is None:
            raise KioskError(f"src: {src} is a URL and no downloader was given")
        fetch(src, local)
    try:
        digest = hashlib.sha256()
        with open(local, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != d["sha256"]:
            raise KioskError(f"src: {src} has sha256 {digest.hexdigest()}, not the expected {d['sha256']}")
        extract_image(local, work, src)
    finally:
        if local != src:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(local)
    # LXC image-server tarballs hold the rootfs itself, or rootfs/ beside a metadata file.
    # lstat, never stat: a "rootfs" or "etc" that is a link is not followed out of the build.
    inner = os.path.join(work, "rootfs")
    if _is_real_dir(inner) and not os.path.lexists(os.path.join(work, "etc")):
        for entry in os.listdir(inner):
            if os.path.lexists(os.path.join(work, entry)):
                raise KioskError(
                    f"src: {src}: the image holds both rootfs/{text.escape(entry)} and {text.escape(entry)}"
                )
            os.rename(os.path.join(inner, entry), os.path.join(work, entry))
        os.rmdir(inner)
    elif os.path.islink(inner) and not os.path.lexists(os.path.join(work, "etc")):
        raise KioskError(f"src: {src}: the image's rootfs is a link, not a directory; refused")
    # configure() then writes into the image through guestfs, which follows no link the image holds.


TAR_KINDS = ("isreg", "isdir", "issym", "islnk", "ischr", "isblk", "isfifo")


def _is_real_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _member_parts(name: str, src: str) -> list[str]:
    """A member's path as parts relative to the rootfs; an absolute path or '..' is refused."""
    if name.startswith("/"):
        raise KioskError(
            f"src: {src}: member {text.quote(name)} is an absolute path; refused (a rootfs image holds paths"
            " relative to its root)"
        )
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise KioskError(f"src: {src}: member {text.quote(name)} goes up with '..'; refused")
    return parts


def _no_link_on_the_way(work: str, parts: list[str], src: str, name: str) -> None:
    """Every directory above parts[-1] is missing or a real directory inside work, never a link."""
    path = work
    for part in parts[:-1]:
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return  # made as a directory by the extraction itself
        if not stat.S_ISDIR(st.st_mode):
            kind = "the link" if stat.S_ISLNK(st.st_mode) else "the non-directory"
            raise KioskError(
                f"src: {src}: {text.quote(name)} goes through {kind} {text.quote(os.path.relpath(path, work))};"
                " refused (an image is extracted without following links)"
            )


def extract_image(tarball: str, work: str, src: str) -> None:
    """Extract a rootfs tarball into work, keeping device nodes, owners, modes and links, and never
    writing outside work: absolute and '..' members, members (or hard link targets) under a link,
    and other kinds than files, directories, links, device nodes and fifos are refused; a member
    replaces a file or link already there rather than writing through it. KioskError naming src.
    """
    kwargs = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
    with tarfile.open(tarball) as tar:
        for member in tar:
            parts = _member_parts(member.name, src)
            if not any(getattr(member, kind)() for kind in TAR_KINDS):
                raise KioskError(f"src: {src}: member {text.quote(member.name)} is of an unknown kind; refused")
            _no_link_on_the_way(work, parts, src, member.name)
            if member.islnk():
                linked = _member_parts(member.linkname, src)
                _no_link_on_the_way(work, linked, src, member.linkname)
                member.linkname = "/".join(linked)
            target = os.path.join(work, *parts)
            if parts and os.path.lexists(target):
                if _is_real_dir(target) and not member.isdir():
                    raise KioskError(f"src: {src}: member {text.quote(member.name)} would replace a directory")
                if not _is_real_dir(target):
                    os.unlink(target)  # replaced, never written through
            member.name = "/".join(parts) or "."
            tar.extract(member, work, set_attrs=True, numeric_owner=True, **kwargs)


def _distrobuilder(work: str, d: dict, run, _fetch=None) -> None:
    try:
        run(["distrobuilder", "build-dir", d["definition"], work])
    except KioskError as exc:
        # distrobuilder logs its progress on stderr too; the cause is its last line ("Error: ...").
        lines = [line.strip() for line in exc.msg.splitlines() if line.strip()]
        if len(lines) < 2:
            raise
        raise KioskError(f"definition: distrobuilder failed to build {d['definition']}: {lines[-1]}") from exc


def reflinks(src_file: str, dest_dir: str, run) -> bool:
    """Whether files can be cloned copy-on-write (a reflink) from src_file's filesystem into dest_dir.

    Asks cp itself with one small file, so the answer is the one the clone's cp gets.
    """
    probe = os.path.join(dest_dir, ".kiosk-reflink-probe")
    try:
        run(["cp", "--reflink=always", "--", src_file, probe])
        return True
    except KioskError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(probe)


def _clone(work: str, d: dict, run, _fetch=None) -> None:
    """Copy-on-write where the filesystem can (btrfs, XFS reflinks), a plain copy elsewhere.

    Which of the two it was is recorded as "cow" in the clone's manifest (not in its key).
    """
    d["cow"] = reflinks(_record_file(d["src"]), work, run)
    run(["cp", "-a", "--reflink=auto", "--", os.path.join(d["src"], "."), work])
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(work, MANIFEST))  # a base built before records moved out
    # Written through guestfs: a link the base holds at these names is replaced, never followed.
    guestfs.write_file(work, "etc/hostname", d["hostname"] + "\n", replace_link=True)
    hosts = f"127.0.0.1\tlocalhost\n127.0.1.1\t{d['hostname']}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    guestfs.write_file(work, "etc/hosts", hosts, replace_link=True)
    identity.renew(work, d["hostname"], run)  # its own machine-id and SSH host keys, before any boot
    if d.get("idmap"):
        idmaplib.shift(work, d["idmap"])


BUILDERS = {"debootstrap": _debootstrap, "image": _image, "distrobuilder": _distrobuilder, "clone": _clone}


def configure(root: str, d: dict, run) -> None:
    """The guest OS settings every guest of this rootfs shares (written through guestfs: no link followed)."""
    if d["networkd"]:
        guestfs.write_file(root, "etc/systemd/network/80-kiosk-eth0.network", NETWORKD_UNIT, replace_link=True)
        for unit in ("systemd-networkd.service", "systemd-resolved.service"):
            guestfs.make_link(root, f"etc/systemd/system/multi-user.target.wants/{unit}", f"/lib/systemd/system/{unit}")
        # The resolver is the one networkd feeds from the lease (the bridge's dnsmasq),
        # never the build host's resolv.conf.
        guestfs.make_link(root, "etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf", replace=True)
    if d["user"]:
        run(["chroot", root, "sh", "-c",
             f"getent group audio >/dev/null || groupadd -r audio; "
             f"id {d['user']} >/dev/null 2>&1 || useradd -m -s /bin/sh -G audio {d['user']}"])  # fmt: skip
        if d["networkd"] and d["audio"] != "none":
            # Lingering: the user's own systemd, and with it the sound server, starts at
            # boot without anybody logging in, as a kiosk needs.
            linger = f"var/lib/systemd/linger/{d['user']}"
            if guestfs.read_file(root, linger) is None:
                guestfs.write_file(root, linger, "")
