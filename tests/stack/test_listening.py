"""Only the public entrypoints listen beyond loopback (docs/operations.md, Ports).

Read from the kernel, without sending anything anywhere: every listening TCP socket in
/proc/net/tcp and /proc/net/tcp6, matched by inode to the sockets that the stack's
processes hold open (/proc/<pid>/fd): supervisord and everything it runs, PostgreSQL
and Redis.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from tests.harness.stack import Stack

PUBLIC_PORTS = {8080, 8443}
# Ports the native stack must be found listening on, so that a discovery that misses
# processes cannot pass unnoticed.
EXPECTED_PORTS = {
    *(8080, 8443, 8081, 8082, 8083, 8180, 9000, 9090, 9093, 9095, 5432, 6379),
    *(4317, 4318, 16685, 16686, 13133),  # Jaeger
    *(9428, 8888, 4327, 4328, 8880),  # the log store, its shipper, vmalert
}
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column
POSTGRES_PID_FILE = Path("/var/run/postgresql/15-main.pid")


@dataclass(frozen=True)
class Listener:
    """A listening socket and the process that holds it."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    pid: int
    program: str

    @property
    def loopback(self) -> bool:
        """True when only this host can connect (IPv4-mapped loopback included)."""
        if isinstance(self.address, ipaddress.IPv6Address) and self.address.ipv4_mapped:
            return self.address.ipv4_mapped.is_loopback
        return self.address.is_loopback

    def __str__(self) -> str:
        return f"{self.program} (pid {self.pid}) on {self.address}:{self.port}"


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net/tcp* writes it: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hex_address)
    ordered = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(ordered)


def listening_sockets() -> dict[int, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """Every listening TCP socket of this network namespace: inode -> (address, port)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != LISTEN:
                continue
            hex_address, hex_port = fields[1].split(":")
            found[int(fields[9])] = (_address(hex_address), int(hex_port, 16))
    return found


def _children() -> dict[int, list[int]]:
    """Every process's children, from the parent pid in /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        # The command name may hold blanks and parentheses; the fields after it do not.
        parent = int(text.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(stat.parent.name))
    return children


def stack_processes(state_dir: Path) -> set[int]:
    """supervisord, PostgreSQL and Redis, and every descendant of each."""
    roots = [
        int((state_dir / "supervisord.pid").read_text().split()[0]),
        int(POSTGRES_PID_FILE.read_text().split()[0]),
        int((state_dir / "redis" / "redis.pid").read_text().split()[0]),
    ]
    children = _children()
    found: set[int] = set()
    while roots:
        pid = roots.pop()
        if pid not in found:
            found.add(pid)
            roots.extend(children.get(pid, []))
    return found


def stack_listeners(state_dir: Path) -> list[Listener]:
    """Every listening TCP socket held by a process of the stack."""
    sockets = listening_sockets()
    found = []
    for pid in sorted(stack_processes(state_dir)):
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            program = (fd_dir.parent / "comm").read_text().strip()
            links = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except OSError:  # gone meanwhile
            continue
        for link in links:
            if link.startswith("socket:[") and (inode := int(link[8:-1])) in sockets:
                address, port = sockets[inode]
                found.append(Listener(address, port, pid, program))
    return found


def test_the_address_decoding_reads_the_kernels_byte_order() -> None:
    assert _address("0100007F") == ipaddress.ip_address("127.0.0.1")
    assert _address("00000000") == ipaddress.ip_address("0.0.0.0")
    mapped = _address("0000000000000000FFFF00000100007F")
    assert mapped == ipaddress.ip_address("::ffff:127.0.0.1")
    assert Listener(mapped, 1, 1, "x").loopback
    assert not Listener(_address("00000000000000000000000000000000"), 1, 1, "x").loopback
    assert not Listener(_address("0500000A"), 1, 1, "x").loopback  # 10.0.0.5


def test_only_the_public_entrypoints_listen_beyond_loopback(native_stack: Stack) -> None:
    assert native_stack.state_dir is not None
    listeners = stack_listeners(native_stack.state_dir)
    missing = EXPECTED_PORTS - {listener.port for listener in listeners}
    assert not missing, f"not found listening: {sorted(missing)}"
    beyond_loopback = [
        str(each) for each in listeners if not each.loopback and each.port not in PUBLIC_PORTS
    ]
    assert beyond_loopback == [], f"internal ports reachable from other hosts: {beyond_loopback}"
    public = {(each.program, each.port) for each in listeners if not each.loopback}
    assert public == {("traefik", 8080), ("traefik", 8443)}, public
