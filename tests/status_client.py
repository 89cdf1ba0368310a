#!/usr/bin/env python3
"""status_client.py - a scriptable client of a pollen job's status socket, for
tests/test_status_job.sh and the "Status socket" benchmark in BENCHMARKS.md.

  req JOB LINE...               one connection, each request line in turn, one reply line each
  tcp PORT TOKEN|- LINE...      the same over TCP on 127.0.0.1 (TOKEN '-': no auth line sent)
  http PORT TOKEN|-             GET /metrics (Bearer TOKEN); prints the status code, then the body
  method PORT TOKEN|- METHOD    METHOD /metrics (with a small body); JSON: status code, Allow
                                header, body bytes
  burst JOB|tcp:PORT N          N (1..5000) clients that connect and close at once; JSON summary
  subscribe JOB SECS N          subscribe, read N pushes, unsubscribe; prints a JSON summary
  many JOB N                    N clients connected at once, each asks status; JSON summary
  load JOB CLIENTS HZ SECS      CLIENTS clients each ask status HZ times a second for SECS
                                or until the job ends; JSON summary with latency median/p99 (ms)
Exit 1 with a message when the job does not answer in time."""
import json
import os
import selectors
import socket
import statistics
import struct
import sys
import time

TIMEOUT = 10.0


def unix(job):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # A blocking connect, bounded by SO_SNDTIMEO, waits for room in a full backlog as
    # `pollen status` does; with settimeout() first it would fail at once with EAGAIN.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(TIMEOUT), 0))
    s.connect(os.path.join(job, "status.sock"))
    s.settimeout(TIMEOUT)
    return s


def readline(f):
    line = f.readline()
    if not line.endswith(b"\n"):
        raise SystemExit("connection closed after %r" % line)
    return line.decode().rstrip("\n")


def talk(sock, lines):
    f = sock.makefile("rwb")
    for line in lines:
        f.write(line.encode() + b"\n")
        f.flush()
        print(readline(f), flush=True)


def cmd_tcp(port, token, lines):
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=TIMEOUT)
    if token != "-":
        lines = [json.dumps({"cmd": "auth", "token": token})] + list(lines)
    talk(s, lines)


def http_exchange(port, token, method, body=""):
    """One HTTP request to /metrics on loopback; returns the whole answer, read to its close."""
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=TIMEOUT)
    head = "%s /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n" % method
    if body:
        head += "Content-Length: %d\r\n" % len(body)
    if token != "-":
        head += "Authorization: Bearer %s\r\n" % token
    s.sendall((head + "\r\n" + body).encode())
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    return data


def cmd_http(port, token):
    text = http_exchange(port, token, "GET").decode()
    status, _, rest = text.partition("\r\n")
    print(status.split(" ")[1] if " " in status else "none")
    print(rest.partition("\r\n\r\n")[2], end="")


def cmd_method(port, token, method):
    data = http_exchange(port, token, method, "{}")
    head, _, body = data.decode().partition("\r\n\r\n")
    lines = head.split("\r\n")
    fields = dict(l.split(": ", 1) for l in lines[1:] if ": " in l)
    print(json.dumps({"status_line": lines[0], "allow": fields.get("Allow"),
                      "body_bytes": len(body)}))


def cmd_burst(target, n):
    """Loopback or the job's Unix socket only, and a bounded count: a test, not a flood."""
    n = int(n)
    if not 1 <= n <= 5000:
        raise SystemExit("burst: N must be 1..5000")
    t0 = time.monotonic()
    for _ in range(n):
        if target.startswith("tcp:"):
            s = socket.create_connection(("127.0.0.1", int(target[4:])), timeout=TIMEOUT)
        else:
            s = unix(target)
        s.close()
    print(json.dumps({"clients": n, "s": round(time.monotonic() - t0, 3)}))


def cmd_subscribe(job, secs, n):
    s = unix(job)
    f = s.makefile("rwb")
    f.write(json.dumps({"cmd": "subscribe", "interval": float(secs)}).encode() + b"\n")
    f.flush()
    ack = json.loads(readline(f))
    times, steps, pushes, figures = [], [], 0, []
    for _ in range(int(n)):
        o = json.loads(readline(f))
        times.append(o["time"])  # the server's clock: the client may read two pushes at once
        steps.append(o.get("step"))
        figures.append([o.get("state"), o.get("loss"), o.get("images_per_s")])
        pushes += o.get("push") is True and o.get("ok") is True
    f.write(b'{"cmd":"unsubscribe"}\n')
    f.flush()
    # Pushes already on their way may precede the answer to unsubscribe.
    while True:
        o = json.loads(readline(f))
        if o.get("cmd") == "unsubscribe":
            break
    s.settimeout(3 * float(secs) + 0.2)
    try:
        after = len(s.recv(65536))
    except socket.timeout:
        after = 0
    gaps = [b - a for a, b in zip(times, times[1:])]
    print(json.dumps({"ack": ack, "pushes": pushes, "steps": steps, "gaps": gaps, "figures": figures,
                      "bytes_after_unsubscribe": after}))


def cmd_many(job, n):
    n = int(n)
    t0 = time.monotonic()
    socks = [unix(job) for _ in range(n)]
    connected = time.monotonic() - t0
    for s in socks:
        s.sendall(b'{"cmd":"status"}\n')
    sel = selectors.DefaultSelector()
    bufs = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        bufs[s] = b""
    ok = done = 0
    steps = []
    deadline = time.monotonic() + 30
    while done < n and time.monotonic() < deadline:
        for key, _ in sel.select(1):
            s = key.fileobj
            d = s.recv(65536)
            bufs[s] += d
            if b"\n" in bufs[s] or not d:
                sel.unregister(s)
                done += 1
                try:
                    o = json.loads(bufs[s].split(b"\n")[0])
                    ok += o.get("ok") is True and o.get("cmd") == "status"
                    steps.append(o.get("step"))
                except ValueError:
                    pass
    for s in socks:
        s.close()
    print(json.dumps({"clients": n, "answered_ok": ok, "connect_s": round(connected, 3),
                      "all_s": round(time.monotonic() - t0, 3),
                      "steps": [min(steps), max(steps)] if steps else None}))


def cmd_load(job, clients, hz, secs):
    """Each client sends a request every 1/hz s (staggered) and times the answer."""
    clients, period, secs = int(clients), 1.0 / float(hz), float(secs)
    socks = [unix(job) for _ in range(clients)]
    sel = selectors.DefaultSelector()
    state = {}
    t0 = time.monotonic()
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        state[s] = {"next": t0 + period * i / clients, "sent": None, "buf": b""}
    lat, errors, ended = [], 0, False
    end = t0 + secs
    while not ended:
        now = time.monotonic()
        if now >= end and all(st["sent"] is None for st in state.values()):
            break
        for s, st in state.items():
            if st["sent"] is None and now >= st["next"] and now < end:
                try:
                    s.send(b'{"cmd":"status"}\n')
                except OSError:  # the job ended
                    ended = True
                    break
                st["sent"] = now
                st["next"] += period
                if st["next"] < now:  # fell behind: do not burst to catch up
                    st["next"] = now + period
        if ended:
            break
        wake = min([st["next"] for st in state.values() if st["sent"] is None] + [now + 0.05])
        for key, _ in sel.select(max(0.0, wake - time.monotonic())):
            s = key.fileobj
            st = state[s]
            try:
                d = s.recv(65536)
            except ConnectionResetError:
                d = b""
            if not d:  # the job ended: report what was measured
                ended = True
                break
            st["buf"] += d
            while b"\n" in st["buf"]:
                line, st["buf"] = st["buf"].split(b"\n", 1)
                lat.append(time.monotonic() - st["sent"])
                errors += b'"ok":true' not in line
                st["sent"] = None
        if time.monotonic() > end + TIMEOUT:
            raise SystemExit("answers stopped coming")
    secs = min(secs, time.monotonic() - t0)
    for s in socks:
        s.close()
    lat.sort()
    ms = [1e3 * x for x in lat]
    print(json.dumps({"clients": clients, "hz": float(hz), "requests": len(ms), "errors": errors,
                      "rate": round(len(ms) / secs, 1),
                      "median_ms": round(statistics.median(ms), 3) if ms else None,
                      "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 3) if ms else None,
                      "max_ms": round(ms[-1], 3) if ms else None, "ended": ended,
                      "client_cpu_s": round(time.process_time(), 2), "wall_s": round(secs, 2)}))


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    cmd, args = argv[1], argv[2:]
    try:
        if cmd == "req":
            talk(unix(args[0]), args[1:])
        elif cmd == "tcp":
            cmd_tcp(args[0], args[1], args[2:])
        elif cmd == "http":
            cmd_http(*args)
        elif cmd == "method":
            cmd_method(*args)
        elif cmd == "burst":
            cmd_burst(*args)
        elif cmd == "subscribe":
            cmd_subscribe(*args)
        elif cmd == "many":
            cmd_many(*args)
        elif cmd == "load":
            cmd_load(*args)
        else:
            raise SystemExit(__doc__)
    except (OSError, socket.timeout) as e:
        raise SystemExit("status_client %s: %s" % (cmd, e))


if __name__ == "__main__":
    main(sys.argv)
