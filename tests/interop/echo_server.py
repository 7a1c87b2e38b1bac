"""A grpcio server for switchboard.echo.v1.Echo: the second gRPC implementation the interop test relays to.

Prints `listening on PORT` on stdout once it serves (bind `--port 0` to let the OS pick), then serves until killed.
`--option KEY=VALUE` (repeatable) adds a server channel option, such as `grpc.max_connection_age_ms=1000`;
a value that reads as an integer is passed as one.

Test controls carried in request metadata:
  x-echo-*     echoed back in the initial metadata and again in the trailing metadata
  x-sleep-ms   sleep this long (or until the call is cancelled) before answering
  x-fail       abort with this status code, message "failed as asked", and trailing metadata with `x-detail-bin`;
               ServerStream first sends its `count` replies, so the failure follows data

Replies: Unary echoes the payload; ServerStream sends `count` copies with `received` = their index; ClientStream
answers the last payload with `received` = how many came; BidiStream answers each request as it arrives with
`received` = how many so far.
"""

import argparse
import sys
import time
from concurrent import futures

import grpc

import channel_options
import stubs

echo_pb2, echo_pb2_grpc = stubs.load()

MAX_MESSAGE = 16 * 1024 * 1024
DETAIL_BIN = b"\x00\x01\x02\xff"
CODES = {code.value[0]: code for code in grpc.StatusCode}


class Echo(echo_pb2_grpc.EchoServicer):
    def __init__(self, name):
        self.name = name

    def _begin(self, context):
        """Applies x-sleep-ms and returns (echoed metadata, x-fail code or None)."""
        md = context.invocation_metadata()
        echoed = tuple((k, v) for k, v in md if k.startswith("x-echo-"))
        fail = next((int(v) for k, v in md if k == "x-fail"), None)
        sleep_ms = next((int(v) for k, v in md if k == "x-sleep-ms"), 0)
        deadline = time.monotonic() + sleep_ms / 1000
        while context.is_active() and time.monotonic() < deadline:
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
        context.set_trailing_metadata(echoed + (("x-backend", self.name),))
        if fail is not None and fail not in CODES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"x-fail: {fail} is not a gRPC status code")
        return echoed, CODES.get(fail)

    def _headers(self, context, echoed):
        context.send_initial_metadata((("x-backend", self.name),) + echoed)

    def _abort(self, context, echoed, code):
        context.set_trailing_metadata(echoed + (("x-backend", self.name), ("x-detail-bin", DETAIL_BIN)))
        context.abort(code, "failed as asked")

    def _reply(self, payload, received=0):
        return echo_pb2.EchoReply(payload=payload, backend=self.name, received=received)

    def Unary(self, request, context):
        echoed, fail = self._begin(context)
        if fail is not None:
            self._abort(context, echoed, fail)
        self._headers(context, echoed)
        return self._reply(request.payload)

    def ServerStream(self, request, context):
        echoed, fail = self._begin(context)
        self._headers(context, echoed)
        for i in range(request.count):
            yield self._reply(request.payload, i)
        if fail is not None:
            self._abort(context, echoed, fail)

    def ClientStream(self, request_iterator, context):
        echoed, fail = self._begin(context)
        if fail is not None:
            self._abort(context, echoed, fail)
        self._headers(context, echoed)
        received, last = 0, b""
        for request in request_iterator:
            received, last = received + 1, request.payload
        return self._reply(last, received)

    def BidiStream(self, request_iterator, context):
        echoed, fail = self._begin(context)
        if fail is not None:
            self._abort(context, echoed, fail)
        self._headers(context, echoed)
        for i, request in enumerate(request_iterator, start=1):
            yield self._reply(request.payload, i)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="python")
    parser.add_argument("--tls-cert", help="serve TLS with this PEM certificate chain (and --tls-key)")
    parser.add_argument("--tls-key")
    parser.add_argument("--tls-client-ca", help="require client certificates that chain to this PEM bundle")
    channel_options.add_argument(parser, "server")
    args = parser.parse_args()

    options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
    options += args.option
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=options)
    echo_pb2_grpc.add_EchoServicer_to_server(Echo(args.name), server)
    if args.tls_cert:
        read = lambda p: open(p, "rb").read()
        credentials = grpc.ssl_server_credentials(
            [(read(args.tls_key), read(args.tls_cert))],
            root_certificates=read(args.tls_client_ca) if args.tls_client_ca else None,
            require_client_auth=bool(args.tls_client_ca),
        )
        port = server.add_secure_port(f"127.0.0.1:{args.port}", credentials)
    else:
        port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    if port == 0:
        sys.exit(f"cannot bind 127.0.0.1:{args.port}")
    server.start()
    print(f"listening on {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
