"""The web server's address: whether it is free, and the one line a taken
or unusable one gets (instead of a traceback, or a hub that seems to run
because another one answers on the port)."""

from __future__ import annotations

import errno
import socket

from hub.errors import ConfigError


def listen_error(host: str, port: int, exc: OSError) -> ConfigError:
    """The error `hub up` and `hub serve` stop with when they cannot listen."""
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(f"port {port} on {host} is in use (set HUB_PORT to another port)")
    reason = exc.strerror or exc.__class__.__name__
    return ConfigError(f"cannot listen on {host}:{port}: {reason} (check HUB_HOST and HUB_PORT)")


def check_free(host: str, port: int) -> None:
    """Raises ConfigError unless the web server could listen on (host, port)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as probe:
                # As the web server binds: a port whose last connections are
                # still in TIME_WAIT is free, a port another server holds is not.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
    except OSError as exc:
        raise listen_error(host, port, exc) from None
