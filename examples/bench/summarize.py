#!/usr/bin/env python3
"""Summarise bench_loadgen --json lines written by run.sh (label = scenario/target/round).

  summarize.py RUN/raw.jsonl     # table: medians over rounds per scenario and target
  ... | summarize.py --line      # one progress line per JSON line on stdin
  summarize.py --counters envoy|switchboard < ADMIN_TEXT       # a proxy's TLS counters, as JSON
  summarize.py --server BEFORE AFTER < RECORD                   # RECORD + the counters' deltas

rps/envoy compares throughput (at c=1 that is 1/mean latency); cpu/envoy
compares the proxy's CPU-microseconds per RPC, the steadiest figure here.
Scenarios with one connection per call (tls-handshakes, h2c-connections) get
a table of their own: connections (= handshakes) per second, the proxy's
CPU-microseconds per connection, and how busy the proxy's CPU and the load
generator's CPU (load generator + backend) were. TLS runs are checked: the
client's handshakes (all full, ALPN h2) against the proxy's own counters.
"""
import json
import statistics
import sys


def proxy_cpu(rec):
    return rec.get("cpu", {}).get("proxy", {}).get("us_per_call")


def busy(rec, *names):
    """Percent of one CPU the named watched processes used in the measured window."""
    cpu = rec.get("cpu", {})
    if not all(n in cpu for n in names):
        return None
    return 100 * sum(cpu[n]["cpu_s"] for n in names) / rec["duration_s"]


def tls_problem(rec):
    """Why a TLS run does not count (None when it does): no handshake, not h2, resumed, errors, or the
    proxy's own counters disagree with what the client saw."""
    tls = rec.get("tls")
    if not tls or not tls["handshakes"]:
        return "no TLS handshake"
    for outcome in tls["outcomes"]:
        _version, _suite, _group, alpn, kind = outcome.split()
        if alpn != "h2" or kind != "Full":
            return f"handshake {outcome}"
    if rec["errors"]:
        return f"{rec['errors']} calls failed: {rec['codes']}"
    server = rec.get("server")
    if server is None:
        return "no server counters"
    if server.get("tls_handshake_failed"):
        return f"{server['tls_handshake_failed']} failed handshakes"
    # The proxy's handshake counter (Envoy's ssl.handshake, switchboard's tls_handshakes_total{result="ok"}; an
    # older switchboard has none): all of the client's handshakes, no other.
    if "handshake" in server and server["handshake"] != tls["handshakes"]:
        return f"the proxy counted {server['handshake']} handshakes, the client {tls['handshakes']}"
    if server.get("session_reused") or server.get("connection_error"):
        return f"envoy counters {server}"
    if "calls_ok" in server or "msgs_sent" in server:  # switchboard forwarded every call (bidi: every echoed
        # message; the client counts those as calls).
        key, what = ("msgs_sent", "messages sent") if rec["method"] == "bidi" else ("calls_ok", "OK calls")
        if server.get(key, 0) < rec["calls"]:
            return f"switchboard counted {server.get(key)} {what}, the client {rec['calls']}"
    return None


def line(rec):
    cpu = proxy_cpu(rec)
    text = (f"{rec['label']:<26} rps {rec['rps']:>9.0f}  p50 {rec['p50_us']:>8.1f}us  "
            f"p99 {rec['p99_us']:>8.1f}us  proxy {'-' if cpu is None else f'{cpu:.2f}'} us/rpc  "
            f"errors {rec['errors']}  backends {rec['backends']}")
    if "tls" in rec:
        text += f"  tls {rec['tls']['handshakes']} handshakes: {tls_problem(rec) or 'ok'}"
    return text


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def f(v, digits):
    return "-" if v is None else f"{v:.{digits}f}"


def per_connection(rs):
    return any(r.get("connection_per_call") for r in rs)


def table(recs):
    groups = {}
    for r in recs:
        scenario, target, _ = r["label"].split("/")
        groups.setdefault(scenario, {}).setdefault(target, []).append(r)
    calls = {s: t for s, t in groups.items() if not any(per_connection(rs) for rs in t.values())}
    conns = {s: t for s, t in groups.items() if s not in calls}
    if calls:
        calls_table(calls)
    if conns:
        if calls:
            print()
        connections_table(conns)
    tls_checks(groups)


def ratio(m, t, key):
    a, b = m[t][key], m.get("envoy", {}).get(key)
    return f"{a / b:.2f}" if a and b else "-"


def calls_table(groups):
    width = max([10] + [len(s) for s in groups])
    fmt = "{:<%d} {:<12} {:>8} {:>9} {:>9} {:>12} {:>9} {:>9} {:>7}" % width
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
        for t, x in m.items():
            print(fmt.format(scenario, t, f(x["rps"], 0), f(x["p50"], 1), f(x["p99"], 1),
                             f(x["cpu"], 2), ratio(m, t, "rps"), ratio(m, t, "cpu"), x["errors"]))
    print("(medians over rounds; proxy CPU-us = the proxy's utime+stime per RPC in the measured window)")


def connections_table(groups):
    width = max([10] + [len(s) for s in groups])
    fmt = "{:<%d} {:<12} {:>8} {:>8} {:>8} {:>12} {:>7} {:>8} {:>8} {:>8} {:>7}" % width
    print(fmt.format("scenario", "target", "conns/s", "p50 ms", "p99 ms", "proxy CPU-us",
                     "proxy%", "client%", "cps/envoy", "cpu/envoy", "errors"))
    for scenario, targets in groups.items():
        m = {
            t: dict(
                rps=med(r["rps"] for r in rs),
                p50=med(r["p50_us"] / 1000 for r in rs),
                p99=med(r["p99_us"] / 1000 for r in rs),
                cpu=med(proxy_cpu(r) for r in rs),
                proxy=med(busy(r, "proxy") for r in rs),
                client=med(busy(r, "loadgen", "backend") for r in rs),
                errors=sum(r["errors"] for r in rs),
            )
            for t, rs in targets.items()
        }
        for t, x in m.items():
            print(fmt.format(scenario, t, f(x["rps"], 0), f(x["p50"], 2), f(x["p99"], 2), f(x["cpu"], 1),
                             f(x["proxy"], 0), f(x["client"], 0), ratio(m, t, "rps"), ratio(m, t, "cpu"),
                             x["errors"]))
    print("(medians over rounds; one connection per call: with TLS, one full handshake + one unary call; proxy\n"
          " CPU-us per connection; proxy% / client% = CPU used on the proxy's core / on the core of load generator\n"
          " + backend; near 100% client% means the load generator, not the proxy, set conns/s)")


def tls_checks(groups):
    rows = []
    for scenario, targets in groups.items():
        for t, rs in targets.items():
            if not any("tls" in r for r in rs):
                continue
            problems = [f"round {r['label'].split('/')[2]}: {p}" for r in rs if (p := tls_problem(r))]
            outcomes = sorted({o for r in rs for o in r.get("tls", {}).get("outcomes", {})})
            hs = sum(r.get("tls", {}).get("handshakes", 0) for r in rs)
            verdict = "FAILED: " + "; ".join(problems) if problems else "ok"
            rows.append(f"  {scenario}/{t}: {hs} handshakes ({', '.join(outcomes)}): {verdict}")
    if rows:
        print("TLS checks (client handshakes, all rounds; against the proxy's own counters):")
        print("\n".join(rows))


def counters(kind, text):
    """The TLS instance's own counters from its admin text (Envoy /stats, switchboard /metrics)."""
    c = {}
    for raw in text.splitlines():
        if kind == "envoy":
            name, _, value = raw.partition(": ")
            if name.startswith("listener.") and ".ssl." in name:
                key = name.split(".ssl.", 1)[1]
                if key in ("handshake", "session_reused", "connection_error"):
                    c[key] = c.get(key, 0) + int(value)
        elif kind == "switchboard":
            if raw.startswith("grpc_server_handled_total{") and 'grpc_code="OK"' in raw:
                c["calls_ok"] = c.get("calls_ok", 0) + int(float(raw.rsplit(" ", 1)[1]))
            elif raw.startswith("grpc_server_msg_sent_total{"):
                c["msgs_sent"] = c.get("msgs_sent", 0) + int(float(raw.rsplit(" ", 1)[1]))
            elif raw.startswith('switchboard_downstream_connections_closed_total{reason="tls_handshake_failed"}'):
                c["tls_handshake_failed"] = int(float(raw.rsplit(" ", 1)[1]))
            elif raw.startswith('switchboard_downstream_tls_handshakes_total{result="ok"}'):
                c["handshake"] = int(float(raw.rsplit(" ", 1)[1]))
    return c


def main():
    if sys.argv[1:] == ["--line"]:
        for raw in sys.stdin:
            print(line(json.loads(raw)), flush=True)
        return
    if sys.argv[1:2] == ["--counters"]:
        print(json.dumps(counters(sys.argv[2], sys.stdin.read())))
        return
    if sys.argv[1:2] == ["--server"]:
        before, after = json.loads(sys.argv[2]), json.loads(sys.argv[3])
        rec = json.loads(sys.stdin.read())
        rec["server"] = {k: v - before.get(k, 0) for k, v in after.items()}
        print(json.dumps(rec))
        return
    recs = []
    for path in sys.argv[1:]:
        with open(path) as fh:
            recs += [json.loads(l) for l in fh if l.strip()]
    table(recs)


if __name__ == "__main__":
    main()
