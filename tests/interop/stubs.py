"""Generates the Python code for proto/echo.proto into a temporary directory and imports it.

The generated modules are never committed: each process makes its own copy with grpcio-tools.
"""

import atexit
import importlib
import pathlib
import shutil
import sys
import tempfile

PROTO_DIR = pathlib.Path(__file__).resolve().parents[2] / "proto"


def load():
    """Returns (echo_pb2, echo_pb2_grpc) generated from proto/echo.proto."""
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="switchboard-interop-stubs-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_DIR / "echo.proto"),
        ]
    )
    if rc != 0:
        sys.exit(f"grpc_tools.protoc failed on {PROTO_DIR / 'echo.proto'} (exit {rc})")
    sys.path.insert(0, out)
    return importlib.import_module("echo_pb2"), importlib.import_module("echo_pb2_grpc")
