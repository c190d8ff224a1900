"""What Linux shows of a process and its children: which of them are alive,
which listen on a port, and which one holds each TCP connection to it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

#: Socket states in /proc/net/tcp.
ESTABLISHED = "01"
LISTEN = "0A"


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def live_children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


def listening_sockets(port: int, pid: int | None = None) -> set[str]:
    """The sockets (inodes) listening on `port`, or those `pid` holds. A
    killed process's sockets outlive its turning into a zombie until its
    last thread is gone."""
    held = _socket_inodes(pid) if pid is not None else None
    return {
        inode
        for local, _, state, inode in _tcp_sockets()
        if state == LISTEN and local == port and (held is None or inode in held)
    }


def listens(pid: int, port: int) -> bool:
    return bool(listening_sockets(port, pid))


def connection_owners(port: int, pids: list[int]) -> dict[int, int]:
    """For each established connection to local `port` held by one of
    `pids`: the client's port -> the pid that holds it."""
    owner_of_inode = {inode: pid for pid in pids for inode in _socket_inodes(pid)}
    return {
        remote: owner_of_inode[inode]
        for local, remote, state, inode in _tcp_sockets()
        if state == ESTABLISHED and local == port and inode in owner_of_inode
    }


def _tcp_sockets() -> Iterator[tuple[int, int, str, str]]:
    """(local port, remote port, state, inode) of every TCP socket."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            yield int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16), fields[3], fields[9]


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes
