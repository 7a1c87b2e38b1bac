"""`--option KEY=VALUE` command-line arguments as grpcio channel options, shared by the test servers and clients."""

import argparse


def parse(text):
    """`KEY=VALUE` as a grpcio channel option; integers stay integers, as grpcio wants them."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key, int(value)
    except ValueError:
        return key, value


def add_argument(parser, what):
    parser.add_argument("--option", action="append", default=[], type=parse, metavar="KEY=VALUE",
                        help=f"a {what} channel option, e.g. grpc.max_connection_age_ms=1000 (repeatable)")
