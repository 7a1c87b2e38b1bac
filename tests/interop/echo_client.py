"""A grpcio client that runs every interop check against one target and prints the results as one JSON object.

Usage: echo_client.py --target HOST:PORT

stdout: {"target", "results", "volatile", "failures"}. `results` must be the same whether the target is
echo_server.py itself or switchboard in front of it; `volatile` holds what may rightly differ (messages the proxy
writes itself, timings). Exits 1 when any check fails, after printing each failure on stderr.
"""

import argparse
import hashlib
import json
import queue
import random
import sys
import time

import grpc

import stubs

echo_pb2, echo_pb2_grpc = stubs.load()
EchoRequest = echo_pb2.EchoRequest

MAX_MESSAGE = 16 * 1024 * 1024
CALL_TIMEOUT = 20.0
DETAIL_BIN = b"\x00\x01\x02\xff"
# Metadata the server sets; anything else an implementation adds on its own is not compared.
COMPARED_PREFIXES = ("x-",)


class Mismatch(Exception):
    pass


def expect(cond, message):
    if not cond:
        raise Mismatch(message)


def md_list(md):
    """Metadata as [key, value] pairs sorted by key (values of one key keep their order), binary values as
    `hex:...`, only the keys the server sets."""
    pairs = [[k, "hex:" + v.hex() if isinstance(v, bytes) else v] for k, v in (md or ())]
    return sorted((kv for kv in pairs if kv[0].startswith(COMPARED_PREFIXES)), key=lambda kv: kv[0])


def call_metadata(call):
    return {
        "initial_metadata": md_list(call.initial_metadata()),
        "trailing_metadata": md_list(call.trailing_metadata()),
    }


def md_get(md, key):
    return [v for k, v in (md or ()) if k == key]


def check_unary(stub, volatile):
    reply, call = stub.Unary.with_call(EchoRequest(payload=b"hello"), timeout=CALL_TIMEOUT)
    expect(reply.payload == b"hello", f"payload {reply.payload!r}, want b'hello'")
    expect(reply.backend != "", "reply.backend is empty")
    expect(md_get(call.initial_metadata(), "x-backend") == [reply.backend],
           f"initial metadata x-backend {md_get(call.initial_metadata(), 'x-backend')}, want [{reply.backend!r}]")
    return {"payload": reply.payload.decode(), "backend": reply.backend, "code": call.code().name,
            **call_metadata(call)}


def check_server_stream(stub, volatile):
    call = stub.ServerStream(EchoRequest(payload=b"s", count=100), timeout=CALL_TIMEOUT)
    replies = list(call)
    expect(len(replies) == 100, f"{len(replies)} replies, want 100")
    for i, r in enumerate(replies):
        expect(r.payload == b"s" and r.received == i, f"reply {i}: payload {r.payload!r} received {r.received}")
    expect(call.code() == grpc.StatusCode.OK, f"status {call.code()}")
    return {"replies": len(replies), "code": call.code().name, **call_metadata(call)}


def check_client_stream(stub, volatile):
    requests = [EchoRequest(payload=bytes([i]) * 100) for i in range(50)]
    reply, call = stub.ClientStream.with_call(iter(requests), timeout=CALL_TIMEOUT)
    expect(reply.received == 50, f"received {reply.received}, want 50")
    expect(reply.payload == bytes([49]) * 100, f"payload {reply.payload[:8]!r}..., want the last request's")
    return {"received": reply.received, "last_payload_sha256": hashlib.sha256(reply.payload).hexdigest(),
            "code": call.code().name}


def check_bidi_lockstep(stub, volatile):
    """Each reply must arrive before the next request is sent: nothing on the path may wait for more input."""
    outbox = queue.Queue()

    def requests():
        while (item := outbox.get()) is not None:
            yield item

    call = stub.BidiStream(requests(), timeout=CALL_TIMEOUT)
    try:
        for i in range(50):
            payload = f"ping-{i}".encode()
            outbox.put(EchoRequest(payload=payload))
            reply = next(call, None)
            expect(reply is not None, f"stream ended after {i} replies")
            expect(reply.payload == payload and reply.received == i + 1,
                   f"reply {i}: payload {reply.payload!r} received {reply.received}")
    finally:
        outbox.put(None)  # half-close
    rest = list(call)
    expect(rest == [], f"{len(rest)} replies after the half-close, want none")
    expect(call.code() == grpc.StatusCode.OK, f"status {call.code()}")
    return {"replies": 50, "code": call.code().name, "trailing_metadata": md_list(call.trailing_metadata())}


def check_bidi_half_close(stub, volatile):
    """The client sends all 50 and half-closes before reading: the replies must still all come back."""
    requests = [EchoRequest(payload=f"msg-{i}".encode()) for i in range(50)]
    call = stub.BidiStream(iter(requests), timeout=CALL_TIMEOUT)
    replies = list(call)
    expect(len(replies) == 50, f"{len(replies)} replies, want 50")
    for i, r in enumerate(replies):
        expect(r.payload == f"msg-{i}".encode() and r.received == i + 1,
               f"reply {i}: payload {r.payload!r} received {r.received}")
    expect(call.code() == grpc.StatusCode.OK, f"status {call.code()}")
    return {"replies": len(replies), "code": call.code().name}


SENT_METADATA = (
    ("x-echo-ascii", "hello, interop: ~!@#$%^&*()"),
    ("x-echo-multi", "first"),
    ("x-echo-multi", "second"),
    ("x-echo-data-bin", bytes(range(256))),
    ("x-not-echoed", "kept to itself"),
)


def check_metadata(stub, volatile):
    reply, call = stub.Unary.with_call(EchoRequest(payload=b"md"), metadata=SENT_METADATA, timeout=CALL_TIMEOUT)
    for where, md in (("initial", call.initial_metadata()), ("trailing", call.trailing_metadata())):
        expect(md_get(md, "x-echo-ascii") == [SENT_METADATA[0][1]],
               f"{where} metadata x-echo-ascii {md_get(md, 'x-echo-ascii')!r}")
        expect(md_get(md, "x-echo-multi") == ["first", "second"],
               f"{where} metadata x-echo-multi {md_get(md, 'x-echo-multi')!r}, want ['first', 'second']")
        got = md_get(md, "x-echo-data-bin")
        expect(got == [bytes(range(256))], f"{where} metadata x-echo-data-bin {[v.hex() for v in got]}")
        expect(md_get(md, "x-not-echoed") == [], f"{where} metadata has x-not-echoed")
    return {"code": call.code().name, **call_metadata(call)}


def expect_error(fn, code):
    try:
        fn()
    except grpc.RpcError as e:
        expect(e.code() == code, f"status {e.code().name} ({e.details()!r}), want {code.name}")
        return e
    raise Mismatch(f"call succeeded, want {code.name}")


def check_failure(stub, volatile):
    """A trailers-only failure: status, message and binary trailing metadata all ride in the one HEADERS frame."""
    e = expect_error(lambda: stub.Unary(EchoRequest(payload=b"f"), timeout=CALL_TIMEOUT,
                                        metadata=(("x-fail", "9"), ("x-echo-ascii", "why"))),
                     grpc.StatusCode.FAILED_PRECONDITION)
    expect(e.details() == "failed as asked", f"message {e.details()!r}, want 'failed as asked'")
    trailing = e.trailing_metadata()
    expect(md_get(trailing, "x-detail-bin") == [DETAIL_BIN],
           f"trailing metadata x-detail-bin {md_get(trailing, 'x-detail-bin')!r}, want [{DETAIL_BIN!r}]")
    expect(md_get(trailing, "x-echo-ascii") == ["why"],
           f"trailing metadata x-echo-ascii {md_get(trailing, 'x-echo-ascii')!r}, want ['why']")
    return {"code": e.code().name, "message": e.details(), **call_metadata(e)}


def check_server_stream_failure(stub, volatile):
    """A failure after data: the status and trailing metadata come in real trailers, not a trailers-only reply."""
    call = stub.ServerStream(EchoRequest(payload=b"x", count=3), metadata=(("x-fail", "5"),), timeout=CALL_TIMEOUT)
    got = []
    e = expect_error(lambda: got.extend(call), grpc.StatusCode.NOT_FOUND)
    expect(len(got) == 3, f"{len(got)} replies before the failure, want 3")
    expect(e.details() == "failed as asked", f"message {e.details()!r}")
    expect(md_get(e.trailing_metadata(), "x-detail-bin") == [DETAIL_BIN], "trailing metadata lacks x-detail-bin")
    return {"replies": len(got), "code": e.code().name, "message": e.details(), **call_metadata(call)}


def check_large_unary(stub, volatile):
    payload = random.Random(4).randbytes(4 * 1024 * 1024)
    reply = stub.Unary(EchoRequest(payload=payload), timeout=CALL_TIMEOUT)
    expect(len(reply.payload) == len(payload), f"reply of {len(reply.payload)} bytes, want {len(payload)}")
    expect(reply.payload == payload, "the 4 MiB reply differs from the request")
    return {"bytes": len(reply.payload), "sha256": hashlib.sha256(reply.payload).hexdigest()}


def check_unknown_method(stub, volatile, channel):
    method = "/nope.v1.Nope/Call"
    call = channel.unary_unary(method)
    e = expect_error(lambda: call(b"", timeout=CALL_TIMEOUT), grpc.StatusCode.UNIMPLEMENTED)
    volatile["message"] = e.details()
    return {"code": e.code().name}


def check_deadline(stub, volatile):
    start = time.monotonic()
    e = expect_error(lambda: stub.Unary(EchoRequest(payload=b"slow"), timeout=0.2, metadata=(("x-sleep-ms", "3000"),)),
                     grpc.StatusCode.DEADLINE_EXCEEDED)
    elapsed = time.monotonic() - start
    volatile["message"] = e.details()
    volatile["elapsed_ms"] = round(elapsed * 1000)
    expect(elapsed < 1.5, f"DEADLINE_EXCEEDED after {elapsed:.2f}s, want it near the 0.2s deadline")
    return {"code": e.code().name}


CHECKS = [
    ("unary", check_unary),
    ("server_stream", check_server_stream),
    ("client_stream", check_client_stream),
    ("bidi_lockstep", check_bidi_lockstep),
    ("bidi_half_close", check_bidi_half_close),
    ("metadata", check_metadata),
    ("failure", check_failure),
    ("server_stream_failure", check_server_stream_failure),
    ("large_unary", check_large_unary),
    ("unknown_method", check_unknown_method),
    ("deadline", check_deadline),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT")
    args = parser.parse_args()

    options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
    out = {"target": args.target, "results": {}, "volatile": {}, "failures": []}
    with grpc.insecure_channel(args.target, options=options) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=10)
        except grpc.FutureTimeoutError:
            out["failures"].append(f"connect: {args.target} not ready within 10s")
        stub = echo_pb2_grpc.EchoStub(channel)
        for name, check in CHECKS if not out["failures"] else []:
            volatile = {}
            extra = (channel,) if check is check_unknown_method else ()
            try:
                out["results"][name] = check(stub, volatile, *extra)
            except Mismatch as e:
                out["failures"].append(f"{name}: {e}")
            except grpc.RpcError as e:
                out["failures"].append(f"{name}: unexpected status {e.code().name}: {e.details()!r}")
            if volatile:
                out["volatile"][name] = volatile
    print(json.dumps(out, sort_keys=True))
    for failure in out["failures"]:
        print(f"interop check failed against {args.target}: {failure}", file=sys.stderr)
    sys.exit(1 if out["failures"] else 0)


if __name__ == "__main__":
    main()
