"""The listening socket of `workbench serve`: bound before the index loads, listening before "serving" is printed."""

from __future__ import annotations

import errno
import ipaddress
import socket

from workbench.errors import ServiceError


def bind(host: str, port: int) -> socket.socket:
    """Returns a socket bound to ``host``:``port``, not yet listening; raises ``ServiceError`` when it cannot."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise ServiceError(f"--host {host}: cannot resolve it ({error.strerror})") from None
    listener = socket.socket(family, kind, protocol)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
        listener.bind(address)
    except OSError as error:
        listener.close()
        raise _bind_error(host, port, error) from None
    return listener


def listen(listener: socket.socket, host: str, port: int) -> None:
    """Starts ``listener`` listening (connections queue from now on); raises ``ServiceError`` when it cannot."""
    try:
        listener.listen(2048)  # uvicorn's default backlog
    except OSError as error:
        raise _bind_error(host, port, error) from None


def _bind_error(host: str, port: int, error: OSError) -> ServiceError:
    if error.errno == errno.EADDRINUSE:
        return ServiceError(
            f"cannot listen on {host}:{port}: port {port} is in use; stop what uses it or pass another --port"
        )
    if error.errno == errno.EACCES:
        return ServiceError(f"cannot listen on {host}:{port}: permission denied (ports below 1024 need privileges)")
    if error.errno == errno.EADDRNOTAVAIL:
        return ServiceError(f"cannot listen on {host}:{port}: {host} is not an address of this machine")
    return ServiceError(f"cannot listen on {host}:{port}: {error.strerror or error}")


def is_loopback(address: str) -> bool:
    """True when ``address`` (as ``getsockname`` gives it) is a loopback address: 127.0.0.0/8, ::1, ::ffff:127.x."""
    parsed = ipaddress.ip_address(address.split("%")[0])  # "fe80::1%eth0": the zone names an interface
    mapped = getattr(parsed, "ipv4_mapped", None)
    return parsed.is_loopback or (mapped is not None and mapped.is_loopback)


def exposure_warning(address: str, host: str, api_key: str | None) -> str | None:
    """Returns the warning line for a service bound to ``address`` beyond loopback without a key; else None."""
    if api_key is not None or is_loopback(address):
        return None
    return (
        f"warning: --host {host} accepts connections from other machines and no --api-key-env is set: "
        "anyone who reaches the port can search the index and read /info"
    )
