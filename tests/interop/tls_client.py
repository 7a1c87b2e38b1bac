"""A grpcio client over a secure channel: one call, its outcome printed as JSON on stdout.

`--ca` is the PEM bundle the server's certificate must chain to; `--cert` and `--key` present a client
certificate (mTLS); `--name` is the name the server's certificate must carry (grpc.ssl_target_name_override).
Prints {"code": "OK" or the status code's name, "details": the status message, "backend": the reply's backend}.
"""

import argparse
import json
import pathlib

import grpc

import stubs

echo_pb2, echo_pb2_grpc = stubs.load()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--name", default="localhost")
    parser.add_argument("--method", default="Unary", choices=["Unary", "ServerStream"])
    args = parser.parse_args()

    read = lambda p: pathlib.Path(p).read_bytes() if p else None
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca), private_key=read(args.key), certificate_chain=read(args.cert)
    )
    options = [("grpc.ssl_target_name_override", args.name)]
    with grpc.secure_channel(args.target, credentials, options=options) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        out = {"code": "OK", "details": "", "backend": ""}
        try:
            if args.method == "Unary":
                out["backend"] = stub.Unary(echo_pb2.EchoRequest(payload=b"hi"), timeout=20).backend
            else:
                replies = list(stub.ServerStream(echo_pb2.EchoRequest(payload=b"s", count=3), timeout=20))
                out["backend"] = replies[-1].backend if replies else ""
        except grpc.RpcError as e:
            out["code"], out["details"] = e.code().name, e.details() or ""
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
