"""The fresh-machine proof: the README's set-up, `make lint` and `make unit` on a bare Debian 12.

    python3 tests/fresh/fresh_machine.py [--ref REV]        (or: make fresh-machine [FRESH_REF=REV])

What it builds, every run, and removes at the end (on failure too):

1. A bare Debian root: `debootstrap --variant=minbase --include=ca-certificates,git,make,python3`
   of bookworm, the package set the issue names and nothing else (no gawk, no python3-venv, no
   gcc). It is made once and kept as a tarball in the cache (CACHE_DIR/<key>/root.tar, the key
   being the SHA-256 of release, arch, variant, mirror, package list and ROOT_VERSION); every run
   unpacks a NEW root from it under build/fresh-machine/, so no run sees what an earlier one did.
2. This machine's network: its Debian apt sources (/etc/apt/sources.list[.d], the release,
   -updates and -security; third-party sources left out) as the root's sources.list, its
   /etc/resolv.conf, and the CAs an administrator added in /usr/local/share/ca-certificates (here:
   the egress proxy's, which signs the PyPI connections it passes on), trusted as
   update-ca-certificates would. A newcomer's network needs none of them to be added by hand.
3. The checkout, by `git clone` of this working tree's HEAD with the working tree's uncommitted
   changes laid over it (tracked files changed or deleted, untracked files git does not ignore):
   what is proven is what the developer sees. With --ref REV the commit REV alone, nothing over it.
4. /usr/sbin/policy-rc.d exiting 101: no package's maintainer script starts a service (the root
   has no init, and must not look for the host's). The proof also checks, after the last step,
   that no process of the chroot is still running.

Then, as root in a chroot, in a private mount and pid namespace (`unshare --mount --pid
--propagation private`: nothing mounted there is seen by the host, and every process of the
chroot dies with the namespace): its own /proc (/proc/sys read-only; binfmt_misc is NOT mounted),
a read-only /sys, a /dev tmpfs with null, zero, full, random, urandom, tty and a new devpts, and
without the capabilities to load kernel modules, set the clock, reboot or change the host's
network (the set-up shares the host's network namespace to reach the mirror and PyPI; `make
lint` and `make unit` run in one of their own with only loopback, since they need no network):

    cd /root/kiosk.lxc && <the README's one line> && make deps && make lint && make unit

with the environment of a root login (HOME, PATH, USER, LOGNAME, SHELL; nothing of this
machine's). Each step's outcome and time is printed; the proof fails when any step fails.

pip: the chroot has no pip.conf and no PIP_* variables (this machine has /etc/pip.conf,
/etc/xdg/pip and PIP_FIND_LINKS=/opt/wheels; a new machine has none of them): its pip reaches PyPI
like a newcomer's. /opt/wheels is not needed (it holds nothing requirements-dev.txt names).

Download caches are bind-mounted from CACHE_DIR so a warm run does not download again: apt's
archive of .deb files (/var/cache/apt/archives) and pip's HTTP cache (/root/.cache/pip/http and
http-v2). They hold downloads, not state the proof relies on: apt still installs every package
and pip still installs every distribution. pip's cache of wheels it built (libvirt-python) is NOT
shared, so a build dependency missing from bindep.txt cannot hide behind a wheel from an earlier
run.

Needs root, debootstrap, git, tar, unshare, setpriv. Standard library only (runs before any venv).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "vm"))  # the VM harness's apt sources, cache, tree remover
from kiosk_vm.image import DEFAULT_MIRROR, _run, build_cached, find_mirrors, remove_tree

# Bump when the way the bare root is made changes in a way the inputs of RootSpec do not show.
ROOT_VERSION = 1

DEFAULT_CACHE_DIR = "/var/cache/kiosk-lxc/fresh"
# What the bare Debian 12 has on top of minbase.
PACKAGES = ("ca-certificates", "git", "make", "python3")
# The one line the README's Quick start puts before its two commands (tests/unit/fresh checks it is
# there, word for word). On this root it installs nothing new; it runs so that the set-up proven is
# the README's whole set-up.
README_PRELUDE = "apt-get update && apt-get install -y git make python3 ca-certificates"
STEPS = ("make deps", "make lint", "make unit")
# These run in a network namespace of their own (loopback only, a sysfs of it): they need no network,
# and the host's interfaces, which other work on this machine adds and removes, are not theirs to see
# (the unit session's leftover check compares /sys/class/net before and after).
OFFLINE_STEPS = frozenset({"make lint", "make unit"})
CLONE = "/root/kiosk.lxc"
# A root login's environment on Debian (login(1), /etc/profile's PATH for uid 0).
ENV = {
    "HOME": "/root",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "USER": "root",
    "LOGNAME": "root",
    "SHELL": "/bin/bash",
}
HOST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# Capabilities the chroot's processes lose: it shares the host's kernel and network namespace.
DROPPED_CAPS = ("sys_module", "sys_time", "sys_boot", "net_admin", "sys_rawio", "syslog", "wake_alarm")
DEV_NODES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
POLICY_RC_D = "#!/bin/sh\n# fresh-machine proof: a chroot starts no services\nexit 101\n"


def log(msg: str) -> None:
    print(f"fresh-machine: {msg}", flush=True)


@dataclass(frozen=True)
class RootSpec:
    """Everything the bare root is made from; its hash names the tarball in the cache."""

    release: str = "bookworm"
    arch: str = "amd64"
    variant: str = "minbase"
    mirror: str = DEFAULT_MIRROR
    packages: tuple[str, ...] = PACKAGES
    version: int = ROOT_VERSION

    def inputs(self) -> dict:
        d = asdict(self)
        d["packages"] = sorted(set(self.packages))
        return d

    def key(self) -> str:
        blob = json.dumps(self.inputs(), sort_keys=True, separators=(",", ":"))
        return f"{self.release}-{self.arch}-" + hashlib.sha256(blob.encode()).hexdigest()[:16]

    def debootstrap(self, target: Path) -> list[str]:
        return [
            "debootstrap", f"--variant={self.variant}", f"--arch={self.arch}",
            "--include=" + ",".join(sorted(set(self.packages))),
            self.release, str(target), self.mirror,
        ]  # fmt: skip


def chroot_script(prelude: str = README_PRELUDE, steps: tuple[str, ...] = STEPS) -> list[str]:
    """The commands run in the chroot, in order, each in the clone: the README's set-up and the checks."""
    return ([prelude] if prelude else []) + list(steps)


def sources_list(release: str, mirror: str, security: str | None) -> str:
    lines = [f"deb {mirror} {release} main", f"deb {mirror} {release}-updates main"]
    if security:
        lines.append(f"deb {security} {release}-security main")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the cached bare root
def ensure_root_tarball(spec: RootSpec, cache_dir: Path) -> Path:
    """CACHE/<key>/root.tar, made by debootstrap first when it is not there."""

    def build(tmp: Path) -> None:
        t = time.monotonic()
        log(f"debootstrap {spec.variant} {spec.release} + {','.join(spec.inputs()['packages'])} (once; cached)")
        # Its own mount namespace: the proc/sys debootstrap mounts die with it.
        _run(["unshare", "--mount", "--propagation", "private", *spec.debootstrap(tmp / "root")])
        for deb in (tmp / "root/var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        _run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", str(tmp / "root"),
              "-cf", str(tmp / "root.tar"), "."])  # fmt: skip
        remove_tree(tmp / "root")
        manifest = {"key": spec.key(), "inputs": spec.inputs(), "debootstrap_s": round(time.monotonic() - t, 1)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        log(f"bare root cached as {cache_dir / spec.key() / 'root.tar'} ({manifest['debootstrap_s']} s)")

    return build_cached(cache_dir, spec.key(), lambda p: (p / "root.tar").is_file(), build) / "root.tar"


# ------------------------------------------------------------------ the checkout
def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def uncommitted(repo: Path) -> tuple[list[str], list[str]]:
    """(paths to copy, paths to delete): the working tree against HEAD, untracked unignored files included."""
    changed = [p for p in _git(repo, "diff", "--name-only", "--no-renames", "-z", "HEAD").split("\0") if p]
    untracked = [p for p in _git(repo, "ls-files", "-o", "--exclude-standard", "-z").split("\0") if p]
    copy, delete = [], []
    for p in sorted(set(changed) | set(untracked)):
        (copy if os.path.lexists(repo / p) else delete).append(p)
    return copy, delete


def clone_checkout(repo: Path, dest: Path, ref: str | None) -> str:
    """Clone repo's HEAD (with its uncommitted changes) or ref into dest; a line saying what went in."""
    sha = _git(repo, "rev-parse", "--verify", f"{ref or 'HEAD'}^{{commit}}").strip()
    _run(["git", "clone", "--quiet", "--no-hardlinks", "--no-checkout", str(repo), str(dest)])
    _run(["git", "-C", str(dest), "fetch", "--quiet", str(repo), sha])
    _run(["git", "-C", str(dest), "checkout", "--quiet", "--detach", sha])
    commit = _git(dest, "rev-parse", "--short", "HEAD").strip()
    if ref:
        return f"commit {commit} ({ref})"
    copy, delete = uncommitted(repo)
    if copy:
        # tar keeps modes and symlinks as they are; it reads the file list from git, NUL-separated.
        pack = subprocess.Popen(
            ["tar", "-C", str(repo), "--null", "-T", "-", "-cf", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        unpack = subprocess.Popen(["tar", "-C", str(dest), "-xf", "-"], stdin=pack.stdout)
        pack.stdout.close()
        pack.communicate("".join(f"{p}\0" for p in copy).encode())
        if pack.wait() or unpack.wait():
            raise RuntimeError("copying the working tree's uncommitted files into the clone failed")
    for p in delete:
        (dest / p).unlink()
    return f"HEAD {commit} + {len(copy)} uncommitted file(s) + {len(delete)} deletion(s)"


# ------------------------------------------------------------------ the run
def prepare_root(tarball: Path, root: Path, release: str) -> None:
    root.mkdir(parents=True)
    _run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", str(root), "-xpf", str(tarball)])
    mirror, security = find_mirrors(release)
    (root / "etc/apt/sources.list").write_text(sources_list(release, mirror, security))
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink():
        resolv.unlink()
    shutil.copyfile("/etc/resolv.conf", resolv)
    trust_local_cas(root)
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text(POLICY_RC_D)
    policy.chmod(0o755)


def trust_local_cas(root: Path, local: Path = LOCAL_CAS) -> int:
    """Trust this machine's locally added CAs in root as update-ca-certificates would; how many.

    They are this machine's network (an egress proxy that signs what it passes on), as much as its
    resolv.conf is: not something the project's set-up could or should install.
    """
    certs = sorted(local.glob("*.crt"))
    if not certs:
        return 0
    target = root / LOCAL_CAS.relative_to("/")
    target.mkdir(parents=True, exist_ok=True)
    with open(root / "etc/ssl/certs/ca-certificates.crt", "a") as bundle:
        for crt in certs:
            shutil.copyfile(crt, target / crt.name)
            bundle.write(crt.read_text().rstrip("\n") + "\n")
    return len(certs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fresh_machine.py", description=__doc__.split("\n", maxsplit=1)[0])
    p.add_argument("--ref", help="prove this commit of the checkout instead of the working tree")
    p.add_argument("--repo", default=str(HERE.parents[1]), help="the checkout (default: this one)")
    p.add_argument("--cache-dir", default=os.environ.get("KIOSK_FRESH_CACHE", DEFAULT_CACHE_DIR))
    p.add_argument("--release", default="bookworm")
    p.add_argument("--step", action="append", default=[],
                   help="run this in the chroot instead of the set-up and checks (repeat; debugging)")  # fmt: skip
    p.add_argument("--inside", metavar="ROOT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    # The host's own tools (git, tar, debootstrap, unshare, mount, setpriv, chroot, ip), never a venv's
    # or a developer's PATH: a `make` run puts .venv/bin first (seen: a venv being rebuilt beside the
    # run made setpriv's exec of chroot fail with "Too many levels of symbolic links").
    os.environ["PATH"] = HOST_PATH
    if args.inside:
        return inside(Path(args.inside), Path(args.cache_dir), tuple(args.step) or None)
    if os.geteuid() != 0:
        log("needs root (debootstrap, chroot, mounts in a namespace of its own)")
        return 2

    t0 = time.monotonic()
    repo = Path(args.repo).resolve()
    cache = Path(args.cache_dir)
    mirror = find_mirrors(args.release)[0]
    spec = RootSpec(release=args.release, mirror=mirror)
    tarball = ensure_root_tarball(spec, cache)
    work = repo / "build/fresh-machine"
    work.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    proc = None
    try:
        root = run_dir / "root"
        prepare_root(tarball, root, args.release)
        what = clone_checkout(repo, root / CLONE.lstrip("/"), args.ref)
        log(f"bare {args.release} root from {tarball} in {root}; checkout: {what}")
        log(f"set-up ready in {time.monotonic() - t0:.0f} s")
        cmd = [
            "unshare", "--mount", "--pid", "--fork", "--kill-child=SIGKILL", "--propagation", "private",
            sys.executable, str(Path(__file__).resolve()), "--cache-dir", str(cache), "--inside", str(root),
            *(f"--step={s}" for s in args.step),
        ]  # fmt: skip
        proc = subprocess.Popen(cmd)
        rc = proc.wait()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        remove_tree(run_dir)
    log(f"{'PASSED' if rc == 0 else 'FAILED'} in {time.monotonic() - t0:.0f} s (the root is removed)")
    return rc


# ------------------------------------------------------------------ inside the namespace (pid 1)
def _mount(*args: str) -> None:
    _run(["mount", *args])


def _make_dev(dev: Path) -> None:
    _mount("-t", "tmpfs", "-o", "mode=0755,nosuid,noexec", "fresh-dev", str(dev))
    for name, (major, minor) in DEV_NODES.items():
        os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(dev / name, 0o666)
    for name, target in {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
                         "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}.items():  # fmt: skip
        os.symlink(target, dev / name)
    (dev / "pts").mkdir()
    _mount("-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620,gid=5", "devpts", str(dev / "pts"))
    (dev / "shm").mkdir()
    _mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "shm", str(dev / "shm"))


def _bind_cache(host: Path, target: Path) -> None:
    host.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    _mount("--bind", str(host), str(target))


def call_as_init(cmd: list[str]) -> int:
    """Run cmd to its end as pid 1 of the namespace, reaping every orphan meanwhile, as an init does.

    Daemons that fork away (qemu -daemonize in the VM harness's unit tests) are re-parented to pid 1;
    unreaped, they would stay behind as zombies, which nothing on a real machine leaves.
    """
    child = subprocess.Popen(cmd)
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == child.pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            return child.returncode


def offline(root: Path, cmd: list[str]) -> list[str]:
    """cmd in a new network namespace with only loopback up, and root's /sys showing that namespace."""
    mount_sys = 'mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$1/sys" && ip link set lo up && shift && exec "$@"'
    return ["unshare", "--net", "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", mount_sys, "sh", str(root), *cmd]  # fmt: skip


def reap_orphans() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def leftover_processes(proc: Path, me: int = 1) -> list[str]:
    """'pid comm' of every live process in the namespace's /proc but me (zombies are dead)."""
    out = []
    for d in sorted(proc.glob("[0-9]*"), key=lambda d: int(d.name)):
        with contextlib.suppress(OSError):
            stat = (d / "stat").read_text()
            comm, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
            if int(d.name) != me and state != "Z":
                out.append(f"{d.name} {comm}")
    return out


def inside(root: Path, cache: Path, steps: tuple[str, ...] | None = None) -> int:
    """Runs as pid 1 of a new pid and mount namespace: mount the root's filesystems, run the steps."""
    _mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", str(root / "proc"))
    for ro in ("sys", "sysrq-trigger"):
        if not (root / "proc" / ro).exists():  # no sysrq-trigger on some kernels
            continue
        _mount("--bind", str(root / "proc" / ro), str(root / "proc" / ro))
        _mount("-o", "remount,bind,ro", str(root / "proc" / ro))
    _mount("-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", str(root / "sys"))
    _make_dev(root / "dev")
    _bind_cache(cache / "apt-archives", root / "var/cache/apt/archives")
    for sub in ("http", "http-v2"):
        _bind_cache(cache / "pip" / sub, root / "root/.cache/pip" / sub)

    if (root / "proc/sys/fs/binfmt_misc/status").exists():
        log("binfmt_misc is mounted in the chroot: the proof would not be fresh")
        return 1
    log("in the chroot: its own /proc, no binfmt_misc, policy-rc.d exits 101 (no service starts)")
    log("pip: no pip.conf, no PIP_* variables: PyPI as on a new machine")
    setpriv = ["setpriv", "--bounding-set", ",".join(f"-{c}" for c in DROPPED_CAPS), "--"]
    env = ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in ENV.items())]
    results: list[tuple[str, str]] = []
    rc = 0
    for step in steps or chroot_script():
        if rc:
            results.append((step, "not run"))
            continue
        log(f"# {step}")
        t = time.monotonic()
        cmd = [*setpriv, "chroot", str(root), *env, "/bin/sh", "-c", f"cd {CLONE} && {step}"]
        rc = call_as_init(offline(root, cmd) if step in OFFLINE_STEPS else cmd)
        results.append((step, f"{'passed' if rc == 0 else f'FAILED (exit {rc})'} in {time.monotonic() - t:.0f} s"))
        log(f"{step}: {results[-1][1]}")
    reap_orphans()
    left = leftover_processes(root / "proc")
    for step, outcome in results:
        log(f"  {step:<12} {outcome}")
    if left:
        log(f"still running in the chroot after the last step (a service was started): {', '.join(left)}")
        rc = rc or 1
    else:
        log("no process of the chroot is left running")
    return rc


if __name__ == "__main__":
    sys.exit(main())
