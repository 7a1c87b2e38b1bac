"""A grpcio load client for switchboard.echo.v1.Echo: many calls, counted by outcome, as one JSON object.

Usage: load_client.py --target TARGET [--lb round_robin|pick_first] [--concurrency N] (--calls N | --duration S)
                      [--method unary|server|client|bidi] [--count N] [--payload-size B] [--timeout S]
                      [--metadata KEY=VALUE ...] [--option KEY=VALUE ...]

TARGET is any grpcio target, e.g. `127.0.0.1:50051` or `ipv4:127.0.0.1:P1,127.0.0.1:P2` (several addresses, for
round_robin). The client waits until the channel is ready, then keeps N calls in flight until N calls were made
or S seconds passed; a failed call is counted and the load goes on.

stdout: {"calls", "codes": {STATUS_NAME: n}, "errors": [first few "STATUS: details"], "backends": {x-backend: n},
"elapsed_ms"}. `backends` counts the calls whose response headers or trailers named a backend. Exits 0 when the
load ran (whatever the calls' outcomes), 2 when the channel did not become ready.
"""

import argparse
import collections
import itertools
import json
import sys
import threading
import time

import grpc

import channel_options
import stubs

echo_pb2, echo_pb2_grpc = stubs.load()
EchoRequest = echo_pb2.EchoRequest

MAX_MESSAGE = 16 * 1024 * 1024
KEPT_ERRORS = 5
NOT_READY_EXIT = 2


class Tally:
    """Outcomes of the calls so far, shared by the worker threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.codes = collections.Counter()
        self.backends = collections.Counter()
        self.errors = []

    def add(self, code, backend, error=None):
        with self.lock:
            self.codes[code.name] += 1
            if backend is not None:
                self.backends[backend] += 1
            if error is not None and len(self.errors) < KEPT_ERRORS:
                self.errors.append(error)


def backend_of(call):
    """The `x-backend` the response named, in its headers or else its trailers."""
    for md in (call.initial_metadata(), call.trailing_metadata()):
        for key, value in md or ():
            if key == "x-backend":
                return value
    return None


def one_call(stub, args, metadata):
    """Makes one call of `args.method` and returns the finished call object (also when it failed)."""
    payload = b"x" * args.payload_size
    if args.method == "unary":
        call = stub.Unary.future(EchoRequest(payload=payload), timeout=args.timeout, metadata=metadata)
        call.result()
    elif args.method == "server":
        call = stub.ServerStream(EchoRequest(payload=payload, count=args.count), timeout=args.timeout,
                                 metadata=metadata)
        for _ in call:
            pass
    elif args.method == "client":
        requests = (EchoRequest(payload=payload) for _ in range(args.count))
        call = stub.ClientStream.future(requests, timeout=args.timeout, metadata=metadata)
        call.result()
    else:
        requests = (EchoRequest(payload=payload) for _ in range(args.count))
        call = stub.BidiStream(requests, timeout=args.timeout, metadata=metadata)
        for _ in call:
            pass
    return call


def worker(stub, args, metadata, tickets, stop_at, tally):
    while next(tickets, None) is not None and time.monotonic() < stop_at:
        try:
            call = one_call(stub, args, metadata)
            tally.add(grpc.StatusCode.OK, backend_of(call))
        except grpc.RpcError as e:
            tally.add(e.code(), backend_of(e), f"{e.code().name}: {e.details()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--lb", choices=["pick_first", "round_robin"], default="pick_first")
    parser.add_argument("--concurrency", type=int, default=1, help="calls in flight")
    amount = parser.add_mutually_exclusive_group(required=True)
    amount.add_argument("--calls", type=int, help="how many calls in all")
    amount.add_argument("--duration", type=float, help="seconds of load")
    parser.add_argument("--method", choices=["unary", "server", "client", "bidi"], default="unary")
    parser.add_argument("--count", type=int, default=3, help="replies (server) or requests (client, bidi) per call")
    parser.add_argument("--payload-size", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=10.0, help="each call's deadline in seconds")
    parser.add_argument("--ready-timeout", type=float, default=10.0)
    parser.add_argument("--metadata", action="append", default=[], type=channel_options.parse, metavar="KEY=VALUE",
                        help="request metadata on every call (repeatable)")
    channel_options.add_argument(parser, "client")
    args = parser.parse_args()

    service_config = json.dumps({"loadBalancingConfig": [{args.lb: {}}]})
    options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE),
               ("grpc.service_config", service_config)] + args.option
    metadata = tuple((k, str(v)) for k, v in args.metadata)
    with grpc.insecure_channel(args.target, options=options) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=args.ready_timeout)
        except grpc.FutureTimeoutError:
            print(f"load_client: {args.target} not ready within {args.ready_timeout}s", file=sys.stderr)
            sys.exit(NOT_READY_EXIT)
        stub = echo_pb2_grpc.EchoStub(channel)
        tally = Tally()
        # One ticket per call; `itertools.count()` is endless for a timed run. next() on it is atomic under the GIL.
        tickets = iter(range(args.calls)) if args.calls is not None else itertools.count()
        start = time.monotonic()
        stop_at = start + args.duration if args.duration is not None else float("inf")
        threads = [threading.Thread(target=worker, args=(stub, args, metadata, tickets, stop_at, tally))
                   for _ in range(args.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
    out = {"calls": sum(tally.codes.values()), "codes": dict(tally.codes), "errors": tally.errors,
           "backends": dict(tally.backends), "elapsed_ms": round(elapsed * 1000)}
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
