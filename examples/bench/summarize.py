#!/usr/bin/env python3
"""Summarise bench_loadgen --json lines written by run.sh (label = scenario/target/round).

  summarize.py RUN/raw.jsonl     # table: medians over rounds per scenario and target
  ... | summarize.py --line      # one progress line per JSON line on stdin

rps/envoy compares throughput (at c=1 that is 1/mean latency); cpu/envoy
compares the proxy's CPU-microseconds per RPC, the steadiest figure here.
"""
import json
import statistics
import sys


def proxy_cpu(rec):
    return rec.get("cpu", {}).get("proxy", {}).get("us_per_call")


def line(rec):
    cpu = proxy_cpu(rec)
    return (f"{rec['label']:<26} rps {rec['rps']:>9.0f}  p50 {rec['p50_us']:>8.1f}us  "
            f"p99 {rec['p99_us']:>8.1f}us  proxy {'-' if cpu is None else f'{cpu:.2f}'} us/rpc  "
            f"errors {rec['errors']}  backends {rec['backends']}")


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def table(recs):
    groups = {}
    for r in recs:
        scenario, target, _ = r["label"].split("/")
        groups.setdefault(scenario, {}).setdefault(target, []).append(r)
    fmt = "{:<10} {:<12} {:>8} {:>9} {:>9} {:>12} {:>9} {:>9} {:>7}"
    print(fmt.format("scenario", "target", "rps", "p50 us", "p99 us", "proxy CPU-us",
                     "rps/envoy", "cpu/envoy", "errors"))
    for scenario, targets in groups.items():
        m = {
            t: dict(
                rps=med(r["rps"] for r in rs),
                p50=med(r["p50_us"] for r in rs),
                p99=med(r["p99_us"] for r in rs),
                cpu=med(proxy_cpu(r) for r in rs),
                errors=sum(r["errors"] for r in rs),
            )
            for t, rs in targets.items()
        }

        def ratio(t, key):
            a, b = m[t][key], m.get("envoy", {}).get(key)
            return f"{a / b:.2f}" if a and b else "-"

        def f(v, digits):
            return "-" if v is None else f"{v:.{digits}f}"

        for t, x in m.items():
            print(fmt.format(scenario, t, f(x["rps"], 0), f(x["p50"], 1), f(x["p99"], 1),
                             f(x["cpu"], 2), ratio(t, "rps"), ratio(t, "cpu"), x["errors"]))
    print("(medians over rounds; proxy CPU-us = the proxy's utime+stime per RPC in the measured window)")


def main():
    if sys.argv[1:] == ["--line"]:
        for raw in sys.stdin:
            print(line(json.loads(raw)), flush=True)
        return
    recs = []
    for path in sys.argv[1:]:
        with open(path) as fh:
            recs += [json.loads(l) for l in fh if l.strip()]
    table(recs)


if __name__ == "__main__":
    main()
