"""Boot kiosk VMs under qemu, reach them over SSH, and always take them down again.

Each VM gets its own directory in the fleet's state directory:

    <state>/<name>/overlay.qcow2  copy-on-write on the cached image (which stays pristine)
    <state>/<name>/qemu.pid       written by qemu itself (-daemonize -pidfile)
    <state>/<name>/serial.log     the console, for when a boot goes wrong
    <state>/fleet.json            names, ports, key: what `destroy`/`ssh` in another process need
    <state>/inventory.yml         the Ansible inventory

The only network a VM has is qemu's user-mode NAT (how it reaches the Debian
mirror), with the VM's port 22 forwarded from 127.0.0.1:<port> on the host.

Cleanup: `Fleet` is a context manager; VMs this process started and has not
handed over (`keep()`) are also stopped at exit and on SIGTERM/SIGHUP. A later
process stops them from the pid files (`destroy(state_dir)`), checking that the
pid still belongs to that VM's qemu before it signals anything.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import binfmt
from .image import Image, _log, file_in, remove_tree
from .inventory import SSH_COMMON_ARGS, Host, write_inventory

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_KERNEL_ARG = re.compile(r"[A-Za-z0-9_.,:/=-]{1,200}")


@dataclass(frozen=True)
class Machine:
    """What qemu emulates for an image of one Debian architecture."""

    qemu: str
    machine: tuple[str, ...]
    console: str

    @property
    def kernel_cmdline(self) -> str:
        return f"root=LABEL=kiosk-root rw console={self.console} net.ifnames=0"


MACHINES = {
    "amd64": Machine("qemu-system-x86_64", ("-machine", "pc"), "ttyS0"),
    # The virt board with a Cortex-A57 (ARMv8.0): a Raspberry Pi 4's Cortex-A72 is the same
    # architecture level, and TCG emulates it faster than -cpu max (no pointer authentication).
    "arm64": Machine("qemu-system-aarch64", ("-machine", "virt", "-cpu", "cortex-a57"), "ttyAMA0"),
}
QEMU = MACHINES["amd64"].qemu
KERNEL_CMDLINE = MACHINES["amd64"].kernel_cmdline


def machine_for(arch: str) -> Machine:
    if arch not in MACHINES:
        raise ValueError(f"arch: no qemu machine known for '{arch}' (one of {', '.join(sorted(MACHINES))})")
    return MACHINES[arch]


# ------------------------------------------------------------------ pure parts
def mac_for(index: int) -> str:
    """A stable, locally administered MAC for VM number `index`."""
    hi, lo = divmod(index % 65536, 256)
    return f"52:54:00:6b:{hi:02x}:{lo:02x}"


def qemu_command(
    *,
    name: str,
    image: Image,
    overlay: Path,
    port: int,
    pidfile: Path,
    serial_log: Path,
    mac: str,
    memory_mb: int = 1536,
    cpus: int = 2,
    accel: str = "tcg",
    arch: str = "amd64",
    kernel_args: tuple[str, ...] = (),
) -> list[str]:
    """The qemu command line for one VM (it daemonizes once the VM is set up)."""
    machine = machine_for(arch)
    bad = [a for a in kernel_args if not _KERNEL_ARG.fullmatch(a)]
    if bad:
        raise ValueError(f"kernel_args: {bad} must each be one word of letters, digits and ._-=,:/ (no spaces)")
    return [
        machine.qemu,
        "-name", f"{name},process={name}",
        "-nodefaults", "-no-user-config",
        *machine.machine, "-accel", accel,
        "-m", str(memory_mb), "-smp", str(cpus),
        "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", " ".join((machine.kernel_cmdline, *kernel_args)),
        "-drive", f"file={overlay},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", f"virtio-net-pci,netdev=net0,mac={mac}",
        "-device", "virtio-rng-pci",
        "-display", "none", "-vga", "none", "-monitor", "none",
        "-serial", f"file:{serial_log}",
        "-daemonize", "-pidfile", str(pidfile),
    ]  # fmt: skip


def ssh_command(host: Host, *command: str, connect_timeout: int = 10) -> list[str]:
    return [
        "ssh", "-p", str(host.port), "-i", host.key, "-l", host.user,
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
        "-o", f"ConnectTimeout={connect_timeout}",
        *shlex.split(SSH_COMMON_ARGS), host.address, *command,
    ]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ processes
def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _is_our_qemu(pid: int, overlay: Path) -> bool:
    """True if pid is a qemu whose command line names this VM's overlay."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return False
    return bool(argv) and "qemu-system" in argv[0] and any(str(overlay) in a for a in argv)


def stop_vm(vm_dir: Path, timeout: float = 15) -> bool:
    """Stop the qemu recorded in vm_dir/qemu.pid; True if one was running."""
    pid = _read_pid(vm_dir / "qemu.pid")
    overlay = vm_dir / "overlay.qcow2"
    if pid is None or not _alive(pid) or not _is_our_qemu(pid, overlay):
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if not _alive(pid):
                return True
            time.sleep(0.2)
    return not _alive(pid)


# ------------------------------------------------------------------ the fleet
@dataclass
class VM:
    name: str
    index: int
    dir: Path
    port: int = 0

    overlay = file_in("dir", "overlay.qcow2")
    pidfile = file_in("dir", "qemu.pid")
    serial_log = file_in("dir", "serial.log")

    def pid(self) -> int | None:
        return _read_pid(self.pidfile)

    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and _alive(pid) and _is_our_qemu(pid, self.overlay)

    def console_tail(self, lines: int = 30) -> str:
        try:
            text = self.serial_log.read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])


_LIVE: dict[int, Fleet] = {}  # fleets of this process that must not outlive it


def _cleanup_live() -> None:
    for fleet in list(_LIVE.values()):
        with contextlib.suppress(Exception):
            fleet.destroy()


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)  # unwinds `with Fleet(...)` blocks, then atexit runs


atexit.register(_cleanup_live)


class BootError(RuntimeError):
    pass


class Fleet:
    """N VMs from one image, in one state directory."""

    def __init__(
        self,
        state_dir: str | Path,
        image: Image,
        *,
        count: int = 1,
        prefix: str = "kiosk-vm",
        memory_mb: int = 1536,
        cpus: int = 2,
        ssh_timeout: float = 900,
        group: str = "kiosk_vms",
        accel: str = "tcg",
        names: list[str] | None = None,
        kernel_args: tuple[str, ...] = (),
    ):
        names = list(names) if names else [f"{prefix}-{i}" for i in range(count)]
        if not names:
            raise ValueError("count must be at least 1")
        bad = [n for n in names if not _NAME.fullmatch(n)]
        if bad or len(set(names)) != len(names):
            raise ValueError(f"VM names must be unique and match {_NAME.pattern}: {names}")
        self.state_dir = Path(state_dir).resolve()
        self.image = image
        self.memory_mb, self.cpus, self.accel = memory_mb, cpus, accel
        self.kernel_args = tuple(kernel_args)
        self.ssh_timeout = ssh_timeout
        self.group = group
        self.vms = [VM(name=n, index=i, dir=self.state_dir / n) for i, n in enumerate(names)]
        self.timings: dict[str, float] = {}
        self.boot_state: dict[str, str] = {}

    # -- context manager: whatever happens inside, the VMs go
    def __enter__(self) -> Fleet:
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    @property
    def inventory_path(self) -> Path:
        return self.state_dir / "inventory.yml"

    def hosts(self) -> list[Host]:
        return [Host(vm.name, vm.port, str(self.image.ssh_key)) for vm in self.vms]

    def up(self) -> list[Host]:
        """Boot every VM, wait for SSH and for systemd to settle, write the inventory."""
        if self.state_dir.exists() and any(self.state_dir.iterdir()):
            raise BootError(f"state directory {self.state_dir} is in use; destroy it first")
        _LIVE[id(self)] = self
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _on_signal)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        try:
            for vm in self.vms:
                self._start(vm)
            self._write_state()
            for vm in self.vms:
                self._wait_ssh(vm, t0)
                self.timings[vm.name] = round(time.monotonic() - t0, 1)
                _log(f"{vm.name}: SSH on 127.0.0.1:{vm.port} after {self.timings[vm.name]} s")
            for vm in self.vms:
                self.boot_state[vm.name] = self.system_state(vm)
            write_inventory(self.inventory_path, self.hosts(), self.group)
            self._write_state()
        except BaseException:
            self.destroy()
            raise
        return self.hosts()

    def keep(self) -> None:
        """Hand the running VMs over to a later `destroy` (from this or another process)."""
        _LIVE.pop(id(self), None)

    def destroy(self) -> None:
        _LIVE.pop(id(self), None)
        destroy(self.state_dir)

    # -- one VM
    def _start(self, vm: VM, attempts: int = 5) -> None:
        vm.dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
             "-b", str(self.image.disk), str(vm.overlay)],
            check=True,
        )  # fmt: skip
        for _attempt in range(attempts):
            vm.port = free_port()
            cmd = qemu_command(
                name=vm.name, image=self.image, overlay=vm.overlay, port=vm.port,
                pidfile=vm.pidfile, serial_log=vm.serial_log, mac=mac_for(vm.index),
                memory_mb=self.memory_mb, cpus=self.cpus, accel=self.accel, arch=self.image.arch,
                kernel_args=self.kernel_args,
            )  # fmt: skip
            (vm.dir / "qemu.cmdline").write_text(shlex.join(cmd) + "\n")
            r = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if r.returncode == 0 and vm.running():
                return
            if "hostfwd" not in r.stderr and "forward" not in r.stderr:
                raise BootError(f"{vm.name}: qemu failed to start: {r.stderr.strip()}")
            # Someone took the port between free_port() and qemu: try another.
        raise BootError(f"{vm.name}: no free loopback port for SSH after {attempts} tries")

    def _wait_ssh(self, vm: VM, t0: float) -> None:
        host = Host(vm.name, vm.port, str(self.image.ssh_key))
        while True:
            if not vm.running():
                raise BootError(f"{vm.name}: qemu exited during boot; console:\n{vm.console_tail()}")
            r = subprocess.run(
                ssh_command(host, "true"), capture_output=True, text=True, check=False,
                timeout=60,
            )  # fmt: skip
            if r.returncode == 0:
                return
            if time.monotonic() - t0 > self.ssh_timeout:
                raise BootError(
                    f"{vm.name}: no SSH on 127.0.0.1:{vm.port} after {self.ssh_timeout:.0f} s; "
                    f"console:\n{vm.console_tail()}"
                )
            time.sleep(3)

    def ssh(self, vm: VM | int | str, command: str, timeout: float = 600, check: bool = False):
        vm = self._vm(vm)
        host = Host(vm.name, vm.port, str(self.image.ssh_key))
        return subprocess.run(
            ssh_command(host, command), capture_output=True, text=True, timeout=timeout,
            check=check,
        )  # fmt: skip

    def system_state(self, vm: VM | int | str, timeout: float = 300) -> str:
        """`systemctl is-system-running --wait`: running, degraded, ..."""
        r = self.ssh(vm, f"timeout {int(timeout)} systemctl is-system-running --wait", timeout + 30)
        return r.stdout.strip() or f"unknown (exit {r.returncode})"

    def _vm(self, vm: VM | int | str) -> VM:
        if isinstance(vm, VM):
            return vm
        if isinstance(vm, int):
            return self.vms[vm]
        return next(v for v in self.vms if v.name == vm)

    def _write_state(self) -> None:
        state = {
            "image": str(self.image.path),
            "key": str(self.image.ssh_key),
            "group": self.group,
            "inventory": str(self.inventory_path),
            "vms": [{"name": v.name, "port": v.port, "dir": str(v.dir)} for v in self.vms],
            "boot_seconds": self.timings,
            "system_state": self.boot_state,
        }
        tmp = self.state_dir / "fleet.json.tmp"
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_dir / "fleet.json")

    @classmethod
    def load(cls, state_dir: str | Path) -> Fleet:
        """The fleet recorded in state_dir (for ssh/status from another process)."""
        state_dir = Path(state_dir).resolve()
        if not (state_dir / "fleet.json").is_file():
            raise BootError(f"no VMs recorded in {state_dir} (no fleet.json)")
        state = json.loads((state_dir / "fleet.json").read_text())
        fleet = cls.__new__(cls)
        fleet.state_dir = state_dir
        fleet.image = Image(Path(state["image"]))
        fleet.group = state.get("group", "kiosk_vms")
        fleet.timings = state.get("boot_seconds", {})
        fleet.boot_state = state.get("system_state", {})
        fleet.vms = [
            VM(name=v["name"], index=i, dir=Path(v["dir"]), port=v["port"]) for i, v in enumerate(state["vms"])
        ]
        return fleet


BINFMT_RECORD = "binfmt.json"


def enable_foreign(state_dir: str | Path, arch: str) -> dict:
    """Let this machine run `arch` programs until destroy(state_dir), which takes back what this did.

    For a scenario whose controller builds a foreign-arch base (molecule/arm64): what was mounted
    and enabled is recorded in state_dir/binfmt.json, so a later process's destroy undoes it.
    """
    state_dir = Path(state_dir)
    if not (state_dir / "fleet.json").is_file():
        raise BootError(f"no VMs recorded in {state_dir}: run up first, so destroy finds what to undo")
    record = state_dir / BINFMT_RECORD
    if record.exists():
        return json.loads(record.read_text())
    done = binfmt.enable(arch)
    record.write_text(json.dumps(done) + "\n")
    return done


def destroy(state_dir: str | Path) -> list[str]:
    """Stop every VM recorded under state_dir (pid files), undo enable_foreign, remove the directory."""
    state_dir = Path(state_dir)
    stopped = []
    if state_dir.is_dir():
        for pidfile in sorted(state_dir.glob("*/qemu.pid")):
            if stop_vm(pidfile.parent):
                stopped.append(pidfile.parent.name)
        record = state_dir / BINFMT_RECORD
        if record.is_file():
            binfmt.undo(json.loads(record.read_text()))
        remove_tree(state_dir)
    return stopped
