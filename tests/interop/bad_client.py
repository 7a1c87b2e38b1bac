"""Bad HTTP/2 clients for tests/limits.rs, printing one JSON object when done.

idle N SECONDS       open N TCP connections to the target, send nothing, hold them; report how many the
                     server closed
rapid-reset N        on one connection, N unary calls each sent (HEADERS, an empty message) and reset
                     (RST_STREAM CANCEL), in
                     batches of 100, the CVE-2023-44487 pattern (with --delay-ms, the resets of a batch
                     follow its HEADERS after that delay); report the GOAWAY received
"""

import argparse
import json
import resource
import select
import socket
import time

import h2.config
import h2.connection
import h2.events


def idle(host, port, n, seconds):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, port))
        s.setblocking(False)
        socks.append(s)
    print(json.dumps({"opened": len(socks)}), flush=True)
    deadline = time.monotonic() + seconds
    closed = set()
    while time.monotonic() < deadline and len(closed) < n:
        for i, s in enumerate(socks):
            if i in closed:
                continue
            try:
                if s.recv(65536) == b"":
                    closed.add(i)
            except BlockingIOError:
                pass
            except OSError:
                closed.add(i)
        time.sleep(0.2)
    print(json.dumps({"closed_by_server": len(closed)}), flush=True)


def rapid_reset(host, port, n, path, delay, extra_headers):
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(conn.data_to_send())
    headers = [
        (":method", "POST"), (":scheme", "http"), (":authority", f"{host}:{port}"), (":path", path),
        ("content-type", "application/grpc"), ("te", "trailers"),
    ] + extra_headers
    sent, goaway, closed = 0, None, False
    stream_id = 1
    while sent < n and not closed:
        batch = []
        for _ in range(min(100, n - sent)):
            conn.send_headers(stream_id, headers)
            # One empty message and the end of the request: a complete unary call the server may start on.
            conn.send_data(stream_id, b"\0\0\0\0\0", end_stream=True)
            batch.append(stream_id)
            stream_id += 2
        if delay:
            # Let the server take the streams before they are reset.
            closed = not send(conn, s)
            time.sleep(delay)
        for i in batch:
            conn.reset_stream(i, error_code=8)
        sent += len(batch)
        closed = closed or not send(conn, s)
        if not closed:
            goaway, closed = drain(conn, s, goaway, 0)
    if not closed:
        goaway, closed = drain(conn, s, goaway, 5.0)
    print(json.dumps({"sent": sent, "goaway": goaway, "closed": closed}), flush=True)


def send(conn, s):
    try:
        s.sendall(conn.data_to_send())
        return True
    except OSError:
        return False


def drain(conn, s, goaway, wait):
    """Reads what the server sent; returns the GOAWAY seen so far and whether the connection closed."""
    deadline = time.monotonic() + wait
    while True:
        timeout = max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([s], [], [], timeout)
        if not ready:
            return goaway, False
        try:
            data = s.recv(65536)
        except OSError:
            return goaway, True
        if not data:
            return goaway, True
        try:
            events = conn.receive_data(data)
        except Exception:  # the server's frames after its GOAWAY may refer to streams we forgot
            events = []
        for e in events:
            if isinstance(e, h2.events.ConnectionTerminated):
                debug = e.additional_data.decode("utf-8", "replace") if e.additional_data else ""
                goaway = {"error_code": int(e.error_code), "last_stream_id": e.last_stream_id, "debug": debug}
        try:
            s.sendall(conn.data_to_send())
        except OSError:
            return goaway, True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True, help="HOST:PORT")
    sub = ap.add_subparsers(dest="mode", required=True)
    i = sub.add_parser("idle")
    i.add_argument("n", type=int)
    i.add_argument("seconds", type=float)
    r = sub.add_parser("rapid-reset")
    r.add_argument("n", type=int)
    r.add_argument("--path", default="/switchboard.echo.v1.Echo/Unary")
    r.add_argument("--delay-ms", type=float, default=0, help="between a batch's HEADERS and its resets")
    r.add_argument("--header", action="append", default=[], help="NAME=VALUE, added to every request")
    args = ap.parse_args()
    host, port = args.target.rsplit(":", 1)
    if args.mode == "idle":
        idle(host, int(port), args.n, args.seconds)
    else:
        extra = [tuple(h.split("=", 1)) for h in args.header]
        rapid_reset(host, int(port), args.n, args.path, args.delay_ms / 1000, extra)


if __name__ == "__main__":
    main()
