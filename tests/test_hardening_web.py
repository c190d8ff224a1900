"""What the web server does before it trusts a request: credentials that are
not text, keys that do not fit, cookies sent by other sites, a development
endpoint asked for by another name, the JavaScript client from another
origin, bodies nobody asked for and sockets nobody uses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hub.runtime.embedded import free_port
from hub.store.settings import Settings
from tests.support.environment import ROOT
from tests.support.http import bearer, request
from tests.support.metrics import sample
from tests.support.processes import HubProcess, serve_env, spawn, wait_ready
from tests.support.tokens import SECRET
from tests.support.waiting import eventually

pytestmark = pytest.mark.gen_test(timeout=60)


def signed(sub: Any, key: Any = SECRET, algorithm: str = "HS256") -> str:
    """A token PyJWT signs as asked (its JSON escapes a lone surrogate)."""
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, key, algorithm=algorithm)


async def answer(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, body: Any = None
) -> tuple[int, Any]:
    """The status and JSON body of one request (a stream's body is not read)."""
    data = None if body is None else json.dumps(body).encode()
    extra = {"Content-Type": "application/json"} if data is not None else {}
    response = await request(url, method, {**extra, **(headers or {})}, data)
    try:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response.status, None
        assert response.headers["content-type"].startswith("application/json"), (url, response.headers)
        return response.status, await response.json_body()
    finally:
        response.close()


# A `sub` that is not text --------------------------------------------------------------

#: Every kind of endpoint a token opens, with the body it takes.
AUTHENTICATED = [
    ("GET", "/api/v1/sse/jobs/my", None),
    ("GET", "/api/v1/sse/jobs/character/j1", None),
    ("GET", "/api/v1/poll/jobs/my", None),
    ("GET", "/api/v1/poll/jobs/my?cursor=0-0", None),
    ("POST", "/api/v1/characters", {"name": "Ada"}),
    ("POST", "/api/v1/jobs", {"type": "character", "input": {"name": "Ada"}}),
    ("GET", "/api/v1/jobs", None),
    ("GET", "/api/v1/jobs/j1", None),
    ("POST", "/api/v1/sse/tickets", None),
    ("POST", "/api/v1/sse/tickets", {"path": "/api/v1/sse/jobs/my"}),
]

NOT_TEXT = ["\udcff", "ada\ud800", "\x00", "ada\nbob", "a\x7fb", "\x85"]


@pytest.mark.parametrize("sub", NOT_TEXT, ids=repr)
async def test_a_sub_that_is_not_text_is_401_everywhere(hub_url, caplog, sub):
    token = signed(sub)
    for method, path, body in AUTHENTICATED:
        status, refused = await answer(hub_url + path, method, bearer(token), body)
        assert (status, refused["error"]) == (401, "unauthorized"), (method, path, refused)
        assert "sub" in refused["message"], refused
    crashes = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and r.name != "hub.access"]
    assert not crashes, crashes


def test_hub_token_refuses_a_user_id_that_is_not_text():
    """`hub token --user $'\\xff'` in a UTF-8 terminal: Python hands over a
    lone surrogate for the undecodable byte."""
    env = {"HUB_JWT_SECRET": SECRET, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
    for args in ([b"--user", b"\xff"], [b"--service", b"svc\xff"], [b"--user", b"ada\x01"]):
        result = subprocess.run(
            [sys.executable.encode(), b"-m", b"hub", b"token", *args], env=env, capture_output=True, timeout=30
        )
        stderr = result.stderr.decode(errors="replace").strip()
        print(f"\nhub token {args}: exit {result.returncode}: {stderr}")
        assert result.returncode == 2 and result.stdout == b"", stderr
        assert "Traceback" not in stderr and len(stderr.splitlines()) == 1, stderr
        assert stderr.startswith(("hub: the user id must", "hub: the service name must")), stderr
        assert "valid Unicode text" in stderr or "control characters" in stderr, stderr


# A key that does not fit the token's algorithm ------------------------------------------


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


RSA_KEY = _rsa()
RSA_PUBLIC = (
    RSA_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


@pytest.mark.hub_settings(jwt_public_key=RSA_PUBLIC, jwt_algorithms=("RS256", "ES256"), jwt_secret=None)
async def test_a_token_whose_algorithm_does_not_fit_the_key_gets_a_readable_401(ctx, hub_url):
    await ctx.journal.create("j1", "alice", "character")
    good = signed("alice", RSA_KEY, "RS256")
    status, _ = await answer(hub_url + "/api/v1/jobs/j1", headers=bearer(good))
    assert status == 200
    wrong = signed("alice", ec.generate_private_key(ec.SECP256R1()), "ES256")
    for path in ("/api/v1/jobs/j1", "/api/v1/sse/jobs/character/j1", "/api/v1/poll/jobs/my"):
        status, body = await answer(hub_url + path, headers=bearer(wrong))
        print(f"\n{path}: {status} {body}")
        assert (status, body["error"]) == (401, "unauthorized"), body
        message = body["message"]
        assert "<" not in message and "0x" not in message and "generator" not in message, message
        assert "alg" in message and "key" in message, message


# The hub_token cookie, sent by another site -----------------------------------------------

APP = "https://app.example"
EVIL = "https://evil.example"
COOKIE_PATHS = ["/api/v1/sse/jobs/my", "/api/v1/poll/jobs/my?cursor=0-0", "/api/v1/jobs", "/api/v1/jobs/j1"]
#: What a browser sends with a request another site's page makes: fetch or
#: EventSource (an Origin), an <img> or <script> (Sec-Fetch-Site alone).
CROSS_SITE = [
    {"Origin": EVIL},
    {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"},
    {"Origin": "https://app.example.evil.example", "Sec-Fetch-Site": "cross-site"},
    {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
]


def same_site(hub_url: str) -> list[dict[str, str]]:
    """Requests from the hub's own pages, an allowed origin, or no browser."""
    return [
        {},
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        {"Origin": hub_url, "Sec-Fetch-Site": "same-origin"},
        {"Origin": hub_url},
        {"Origin": APP, "Sec-Fetch-Site": "cross-site"},
    ]


@pytest.mark.hub_settings(cors_origins=(APP,))
async def test_another_site_cannot_use_the_cookie_and_its_requests_are_counted(ctx, hub_url, token):
    await ctx.journal.create("j1", "alice", "character")
    cookie = {"Cookie": f"hub_token={token('alice')}"}
    for path in COOKIE_PATHS:
        for headers in CROSS_SITE:
            before = sample(ctx, "hub_connections_rejected_total", reason="forbidden")
            status, body = await answer(hub_url + path, headers={**cookie, **headers})
            assert (status, body["error"]) == (403, "forbidden"), (path, headers, body)
            assert "cookie" in body["message"], body
            if "/sse/" in path or "/poll/" in path:
                assert sample(ctx, "hub_connections_rejected_total", reason="forbidden") == before + 1, (path, headers)
        for headers in same_site(hub_url):
            status, body = await answer(hub_url + path, headers={**cookie, **headers})
            assert status == 200, (path, headers, body)
    # A token in the header proves its holder sent it, whatever the page.
    status, _ = await answer(hub_url + "/api/v1/jobs", headers={**bearer(token("alice")), "Origin": EVIL})
    assert status == 200


@pytest.mark.hub_settings(max_connections_per_user=2)
async def test_another_site_cannot_hold_the_users_connection_slots(ctx, hub_url, token):
    """With `SameSite=None`, any page the user visits sends the cookie: it
    must not be able to use up the user's streams."""
    cookie = {"Cookie": f"hub_token={token('alice')}"}
    held = []
    try:
        for _ in range(3):
            response = await request(hub_url + "/api/v1/sse/jobs/my", headers={**cookie, "Origin": EVIL})
            held.append(response)
            assert response.status == 403, response.status
        mine = await request(hub_url + "/api/v1/sse/jobs/my", headers=bearer(token("alice")))
        held.append(mine)
        assert mine.status == 200
    finally:
        for response in held:
            response.close()


# The development token endpoint, asked for by another name --------------------------------


def dev_token(url: str, host: str) -> tuple[int, dict[str, Any]]:
    import urllib.error
    import urllib.request

    asked = urllib.request.Request(
        url + "/api/v1/dev/token",
        json.dumps({"user": "ada"}).encode(),
        {"Content-Type": "application/json", "Host": host},
    )
    try:
        with urllib.request.urlopen(asked, timeout=10) as answered:
            return answered.status, json.load(answered)
    except urllib.error.HTTPError as error:
        assert error.headers["Content-Type"].startswith("application/json")
        return error.code, json.load(error)


def test_the_dev_token_endpoint_answers_only_for_this_machine(hub_process):
    """DNS rebinding: a site whose name resolves to 127.0.0.1 makes the
    browser send its own name as Host; the hub must not hand it a token."""
    hub = hub_process(dev_tokens=True)
    port = hub.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        status, body = dev_token(hub.url, host)
        assert status == 200 and body["user"] == "ada", (host, body)
    for host in (
        f"evil.example:{port}",
        "evil.example",
        f"127.0.0.1.evil.example:{port}",
        f"localhost:{port + 1}",
        "localhost",
    ):
        status, body = dev_token(hub.url, host)
        print(f"\nHost {host}: {status} {body}")
        assert (status, body["error"]) == (403, "forbidden"), (host, body)
        assert "token" not in body, body


def test_the_dev_token_endpoint_answers_for_the_configured_host(hub_process):
    hub = hub_process(dev_tokens=True, HUB_HOST="127.0.0.2")
    assert dev_token(hub.url, f"127.0.0.2:{hub.port}")[0] == 200
    assert dev_token(hub.url, f"rebound.example:{hub.port}")[0] == 403


# The JavaScript client, loaded by another origin ------------------------------------------


async def script(hub_url: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    response = await request(hub_url + "/static/hub-client.js", headers=headers)
    try:
        assert b"export" in await response.body() or response.status != 200
        return response.status, response.headers
    finally:
        response.close()


@pytest.mark.hub_settings(cors_origins=(APP,))
async def test_the_js_client_can_be_imported_by_an_allowed_origin(hub_url):
    status, headers = await script(hub_url, {"Origin": APP})
    assert status == 200
    assert headers.get("access-control-allow-origin") == APP, headers
    assert "origin" in headers.get("vary", "").lower(), headers
    status, headers = await script(hub_url, {"Origin": EVIL})
    assert status == 200 and "access-control-allow-origin" not in headers, headers
    status, headers = await script(hub_url, {})
    assert status == 200 and "access-control-allow-origin" not in headers, headers


async def test_without_cors_the_js_client_gets_no_cors_headers(hub_url):
    status, headers = await script(hub_url, {"Origin": APP})
    assert status == 200 and not any(name.startswith("access-control-") for name in headers), headers


# Bodies nobody asked for, before authentication -----------------------------------------

MIB = 1024 * 1024
#: Connections per target, each announcing a 1 MiB body and sending part of it.
FLOOD_PER_TARGET = 80
FLOOD_SENT = 512 * 1024


def memory(pid: int, field: str) -> int:
    """A field of /proc/PID/status in bytes: VmRSS now, VmHWM the peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def reset_peak(pid: int) -> None:
    # Makes VmHWM start again from VmRSS (Linux 4.0+), so startup does not count.
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass
class Stalled:
    """A request whose body stopped arriving: what came back, if anything."""

    target: str
    sent_at: float = 0.0
    answered_at: float | None = None
    raw: bytes = b""

    @property
    def status(self) -> int | None:
        line = self.raw.split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) > 1 else None

    def json(self) -> Any:
        head, _, body = self.raw.partition(b"\r\n\r\n")
        headers = head.decode("latin-1").lower()
        assert "content-type: application/json" in headers, head
        assert "connection: close" in headers, head
        return json.loads(body)


async def stall(url: str, method: str, path: str, headers: dict[str, str], chunked: bool) -> tuple[Stalled, Any]:
    """Sends the headers of a 1 MiB body and half of it, then nothing."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {MIB}")
    body = b"x" * FLOOD_SENT
    if chunked:
        body = b"%x\r\n" % MIB + body
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return Stalled(f"{method} {path}{' (chunked)' if chunked else ''}", time.monotonic()), (reader, writer)


async def read_answer(stalled: Stalled, reader: asyncio.StreamReader, deadline: float) -> None:
    with contextlib.suppress(OSError, TimeoutError):
        while chunk := await asyncio.wait_for(reader.read(65536), max(0.01, deadline - time.monotonic())):
            if not stalled.raw:
                stalled.answered_at = time.monotonic()
            stalled.raw += chunk


async def test_bodies_are_bounded_and_refused_before_they_are_read(hub_process, token):
    hub = hub_process()
    auth = bearer(token("alice"))
    json_auth = {**auth, "Content-Type": "application/json"}
    targets = [
        ("POST", "/api/v1/sse/tickets", json_auth, False, 413),
        ("GET", "/healthz", {}, False, 400),
        ("GET", "/api/v1/sse/jobs/my", auth, False, 400),
        ("GET", "/api/v1/jobs", auth, False, 400),
        ("POST", "/api/v1/jobs", json_auth, False, 413),
        ("POST", "/api/v1/jobs", json_auth, True, 413),
        ("GET", "/api/v1/poll/jobs/my", auth, True, 400),
    ]
    await answer(hub.url + "/healthz")
    before = memory(hub.pid, "VmRSS")
    reset_peak(hub.pid)
    started = time.monotonic()
    flood = [
        (await stall(hub.url, method, path, headers, chunked), expected)
        for method, path, headers, chunked, expected in targets
        for _ in range(FLOOD_PER_TARGET)
    ]
    deadline = time.monotonic() + 10
    await asyncio.gather(*(read_answer(stalled, reader, deadline) for (stalled, (reader, _)), _ in flood))
    growth = memory(hub.pid, "VmHWM") - before
    waits = [stalled.answered_at - stalled.sent_at for (stalled, _), _ in flood if stalled.answered_at is not None]
    print(
        f"\n{len(flood)} stalled 1 MiB bodies ({FLOOD_SENT // 1024} KiB sent each): hub RSS {before / MIB:.1f} MiB,"
        f" peak +{growth / MIB:.1f} MiB; {len(waits)} answered, the slowest {max(waits, default=0):.2f} s after"
        f" it was sent, in {time.monotonic() - started:.1f} s in all"
    )
    for (_, (_, writer)), _ in flood:
        writer.transport.abort()
    for (stalled, _), expected in flood:
        assert stalled.status == expected, (stalled.target, stalled.raw[:200])
        refusal = stalled.json()
        assert refusal["error"] == ("payload_too_large" if expected == 413 else "bad_request"), refusal
        assert refusal["message"], refusal
    assert growth < 16 * MIB, f"the hub grew by {growth / MIB:.1f} MiB"
    status, _ = await answer(hub.url + "/api/v1/jobs", headers=auth)
    assert status == 200


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "DELETE"])
async def test_a_request_that_takes_no_body_refuses_a_small_one(hub_process, method):
    hub = hub_process()
    stalled, (reader, writer) = await stall_small(hub.url, method)
    await read_answer(stalled, reader, time.monotonic() + 10)
    writer.close()
    assert stalled.status == 400, stalled.raw[:200]
    if method != "HEAD":
        assert stalled.json()["error"] == "bad_request"


async def stall_small(url: str, method: str) -> tuple[Stalled, Any]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(f"{method} /healthz HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Length: 10\r\n\r\n12345".encode())
    return Stalled(method), (reader, writer)


# Sockets nobody uses, under a low file limit ----------------------------------------------

FILE_LIMIT = 256
IDLE_CONNECTIONS = 450
#: Of which this many send headers and a little of their body first, then stall.
MID_BODY = 200
WATCH_SECONDS = 3.0


@pytest.fixture
def low_limit_hub(settings: Settings, tmp_path: Path) -> Iterator[HubProcess]:
    """`hub serve` under `ulimit -n 256` (set in the process itself, then exec)."""
    port = free_port()
    env = serve_env(settings, port)
    limited = (
        "import os, resource, sys;"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({FILE_LIMIT}, {FILE_LIMIT}));"
        "os.execv(sys.executable, [sys.executable, '-m', 'hub', 'serve'])"
    )
    output = tmp_path / "hub.log"
    process = spawn([sys.executable, "-c", limited], env, output)
    hub = HubProcess(process, port, output)
    try:
        wait_ready(hub.url + "/readyz", process)
        yield hub
    finally:
        hub.stop()


def cpu_seconds(pid: int) -> float:
    """User and system time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def healthz_latency(url: str) -> float | None:
    started = time.monotonic()
    try:
        response = await request(url + "/healthz", timeout=2)
        await response.body(timeout=2)
    except (OSError, TimeoutError):
        return None
    return time.monotonic() - started if response.status == 200 else None


async def test_idle_sockets_past_the_file_limit_neither_spin_nor_flood_the_log(low_limit_hub, token):
    hub = low_limit_hub
    assert hub.output is not None
    idle = []
    for n in range(IDLE_CONNECTIONS):
        idle.append(socket.create_connection(("127.0.0.1", hub.port)))
        if n < MID_BODY:
            idle[-1].sendall(b"POST /api/v1/jobs HTTP/1.1\r\nHost: hub\r\nContent-Length: 1000\r\n\r\n{")
    try:
        # Served at once, however many wait; then a window of ordinary life.
        first = await eventually(lambda: healthz_latency(hub.url), timeout=15)
        cpu, log_size, started = cpu_seconds(hub.pid), hub.output.stat().st_size, time.monotonic()
        latencies = []
        while time.monotonic() - started < WATCH_SECONDS:
            latencies.append(await healthz_latency(hub.url))
            await asyncio.sleep(0.25)
        elapsed = time.monotonic() - started
        share = (cpu_seconds(hub.pid) - cpu) / elapsed
        logged = hub.output.stat().st_size - log_size
        answered = [latency for latency in latencies if latency is not None]
        print(
            f"\n{IDLE_CONNECTIONS} idle connections ({MID_BODY} stalled mid-body), file limit {FILE_LIMIT}:"
            f" hub CPU {share:.1%} over {elapsed:.1f} s,"
            f" log +{logged} bytes ({hub.output.stat().st_size} in all); /healthz answered {len(answered)} of"
            f" {len(latencies)}, slowest {max(answered, default=0) * 1000:.0f} ms (the first in {first * 1000:.0f} ms)"
        )
        assert share < 0.15, f"the hub used {share:.0%} of a core"
        assert logged < 2048, hub.output.read_text()[-2000:]
        assert len(answered) == len(latencies), latencies
        assert hub.output.stat().st_size < 8192, hub.output.read_text()[-2000:]
        assert "Traceback" not in hub.output.read_text()
    finally:
        for sock in idle:
            sock.close()
    # Their sockets gone, the hub serves as before: a request and a stream.
    auth = bearer(token("alice"))
    status, _ = await eventually(lambda: answer(hub.url + "/api/v1/jobs", headers=auth), timeout=10)
    assert status == 200
    stream = await request(hub.url + "/api/v1/sse/jobs/my", headers=auth)
    assert stream.status == 200 and (await stream.frame()).retry is not None
    stream.close()


#: A server whose cap is wrongly above its file limit (say, Redis took more
#: files than reserved): accepting fails with EMFILE, and must not spin.
OUT_OF_FILES_SERVER = """
import logging, resource, socket, sys
from tornado.ioloop import IOLoop
from tornado.netutil import bind_sockets
from hub.runtime.accept_gate import AcceptGate

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
kept = []

async def main():
    gate = AcceptGate(limit=10_000, file_limit=64, on_accept=lambda conn, _: kept.append(conn), make_room=lambda: False)
    for sock in bind_sockets(0, "127.0.0.1"):
        gate.add_socket(sock)
        print(sock.getsockname()[1], flush=True)

IOLoop.current().run_sync(main)
IOLoop.current().start()
"""


def test_an_accept_that_fails_for_want_of_files_pauses_instead_of_spinning(tmp_path):
    log_file = tmp_path / "server.log"
    with open(log_file, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", OUT_OF_FILES_SERVER],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=sink,
        )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
        cpu, started = cpu_seconds(process.pid), time.monotonic()
        # A window long enough for several retries (every 0.5 s).
        while time.monotonic() - started < 2.0:
            assert process.poll() is None
            time.sleep(0.1)
        share = (cpu_seconds(process.pid) - cpu) / (time.monotonic() - started)
        logged = log_file.read_text()
        print(f"\naccepting without files: CPU {share:.1%} over 2 s, {len(logged.splitlines())} log line(s)")
        assert share < 0.1, f"{share:.0%} of a core"
        assert "Traceback" not in logged and len(logged.splitlines()) == 1, logged
        assert "Too many open files" in logged, logged
        for client in clients:
            client.close()
    finally:
        process.kill()
        process.wait()


async def test_a_refusal_from_the_headers_is_readable_by_an_allowed_origin(hub_process):
    """A page on an allowed origin learns why its upload was refused."""
    hub = hub_process(HUB_CORS_ORIGINS=APP)
    parts = urlsplit(hub.url)
    for origin, allowed in ((APP, True), (EVIL, False)):
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(
            f"POST /api/v1/jobs HTTP/1.1\r\nHost: {parts.netloc}\r\nOrigin: {origin}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {MIB}\r\n\r\n".encode()
        )
        refused = Stalled(origin)
        await read_answer(refused, reader, time.monotonic() + 10)
        writer.close()
        assert refused.status == 413 and refused.json()["error"] == "payload_too_large", refused.raw[:300]
        head = refused.raw.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
        assert (f"access-control-allow-origin: {origin}" in head) == allowed, head
        assert "vary: origin" in head, head


@pytest.mark.parametrize(
    ("length", "status"),
    [("\u00b2", 400), ("-1", 400), ("1e3", 400), ("9" * 5000, 413)],
    ids=["superscript-2", "-1", "1e3", "5000-digits"],
)
async def test_a_content_length_that_is_not_a_small_number_is_refused_with_json(hub_process, token, length, status):
    hub = hub_process()
    parts = urlsplit(hub.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = (
        f"POST /api/v1/jobs HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token('alice')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    writer.write(head.encode("latin-1"))
    refused = Stalled(length[:10])
    await read_answer(refused, reader, time.monotonic() + 10)
    writer.close()
    assert refused.status == status, refused.raw[:300]
    assert refused.json()["error"] == ("payload_too_large" if status == 413 else "bad_request")
