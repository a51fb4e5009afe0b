"""Soak `edge-llm serve` on loopback: many clients, mixed requests, hostile ones included.

Why: a server that embeds a model must survive what real clients do at once (streams they
abandon, bodies that are broken, oversized or never finish) without a 5xx and without growing.
This starts the real command (`python -m edge_llm serve`) on a free loopback port, warms it up,
then sends REQUESTS requests from CLIENTS threads, a fixed mix (seeded) of:

    chat and completions (whole and streamed), embeddings, streams cancelled after their first
    event, health and model listing; and malformed requests: bad JSON, a lone surrogate, NaN,
    out-of-range values, wrong types, an unknown model, a body over the 4 MB limit, and a body
    shorter than its Content-Length (answered after the server's body timeout).

It reports the statuses, p50/p99 latency (all requests, and the model-bound ones), and the
server's RSS after warm-up and at the end. It fails (exit 1) on any 5xx, any status other than
the one expected for its kind, or RSS after > RSS before + 10%. Every loop is bounded (the
request count, timeouts on every socket); nothing leaves loopback.

    nice -n 10 python -m scripts.soak_server                  # 32 clients, 2,000 requests
    python -m scripts.soak_server --clients 8 --requests 200  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

MIX = [  # (kind, weight, expected status)
    ("chat", 20, 200),
    ("completion", 12, 200),
    ("chat_stream", 8, 200),
    ("stream_cancelled", 10, 200),
    ("embeddings", 8, 200),
    ("health", 5, 200),
    ("models", 5, 200),
    ("bad_json", 5, 400),
    ("lone_surrogate", 5, 400),
    ("nan", 4, 400),
    ("out_of_range", 4, 400),
    ("wrong_type", 4, 400),
    ("unknown_model", 5, 404),
    ("too_big", 2, 413),
    ("short_body", 3, 408),
]
EXPECTED = {kind: status for kind, _, status in MIX}
MODEL_BOUND = {"chat", "completion", "chat_stream", "embeddings"}
TOPICS = ["the sea", "a robot", "bread", "winter", "a violin", "Mars", "tea", "a river"]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_server(model: str | None, ctx: int, log: Path) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "edge_llm", "serve", "--port", "0", "--ctx", str(ctx)]
    if model:
        cmd.insert(4, model)
    f = log.open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        m = re.search(r"at (http://\S+/v1)", log.read_text())
        if m:
            return proc, m.group(1).removesuffix("/v1")
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text().strip()}")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start within 300 s")


def raw_short_body(url: str) -> int:
    """A body 10 bytes long that says it is 100: the server must answer 408, not wait."""
    host, port = url.removeprefix("http://").split(":")
    head = (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + b'{"prompt":')
        data = b""
        for _ in range(1000):  # bounded: the reply is small
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data and data.rstrip().endswith(b"}"):
                break
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def one(client: httpx.Client, url: str, model_id: str, kind: str, rng: random.Random) -> int:
    v1 = f"{url}/v1"
    ask = [{"role": "user", "content": f"Say one thing about {rng.choice(TOPICS)}."}]
    gen = {"max_tokens": rng.randint(2, 8), "temperature": 0.7, "seed": rng.randint(0, 1000)}
    post = lambda path, **kw: client.post(f"{v1}/{path}", **kw).status_code  # noqa: E731
    if kind == "chat":
        return post("chat/completions", json={"model": model_id, "messages": ask, **gen})
    if kind == "completion":
        return post("completions", json={"prompt": f"Once, {rng.choice(TOPICS)}", **gen})
    if kind in ("chat_stream", "stream_cancelled"):
        body = {"messages": ask, "stream": True, **gen}
        if kind == "stream_cancelled":
            body.update(max_tokens=200, ignore_eos=True)
        with client.stream("POST", f"{v1}/chat/completions", json=body) as r:
            for line in r.iter_lines():
                if kind == "stream_cancelled" and line.startswith("data: "):
                    break  # hang up after the first event
            return r.status_code
    if kind == "embeddings":
        return post("embeddings", json={"input": [rng.choice(TOPICS), "a short text"]})
    if kind == "health":
        return client.get(f"{url}/health").status_code
    if kind == "models":
        return client.get(f"{v1}/models").status_code
    headers = {"Content-Type": "application/json"}
    if kind == "bad_json":
        return post("chat/completions", content=b'{"messages": [', headers=headers)
    if kind == "lone_surrogate":
        raw = b'{"messages": [{"role": "user", "content": "hi \\ud800"}]}'
        return post("chat/completions", content=raw, headers=headers)
    if kind == "nan":
        return post("completions", content=b'{"prompt": "a", "temperature": NaN}', headers=headers)
    if kind == "out_of_range":
        return post("completions", json={"prompt": "a", "temperature": 1e308})
    if kind == "wrong_type":
        return post("chat/completions", json={"messages": "hello", "max_tokens": "ten"})
    if kind == "unknown_model":
        return post("chat/completions", json={"model": "gpt-4o", "messages": ask})
    if kind == "too_big":
        return post("completions", json={"prompt": "x" * (4 * 1024 * 1024 + 10)})
    if kind == "short_body":
        return raw_short_body(url)
    raise ValueError(kind)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model to serve (default: edge-llm's default)")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=900, help="client timeout per request (s)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    rng = random.Random(args.seed)
    kinds = [k for k, _, _ in MIX]
    plan = rng.choices(kinds, weights=[w for _, w, _ in MIX], k=args.requests)
    m = soak(args, plan)
    figures = summarise(m, args.clients, kinds)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    failed = failures(figures, m, args.timeout)
    for f in failed:
        print(f"soak: FAILED: {f}", file=sys.stderr)
    if not failed:
        print(
            f"soak: ok: {len(m['results'])} requests from {args.clients} clients in {m['wall']:.0f} s, "
            f"0 5xx, p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, RSS "
            f"{figures['rss_before_mb']} -> {figures['rss_after_mb']} MB",
            file=sys.stderr,
        )
    return 1 if failed else 0


def soak(args, plan: list[str]) -> dict:
    """A server started, warmed up and sent ``plan`` by --clients clients; its RSS at the start,
    after the warm-up and after the soak, whether it survived, its request log lines."""
    with tempfile.TemporaryDirectory(prefix="edge-llm-soak-") as tmp:
        log = Path(tmp) / "server.log"
        proc, url = start_server(args.model, args.ctx, log)
        try:
            models = httpx.get(f"{url}/v1/models", timeout=30).json()
            model_id = models["data"][0]["id"]
            rss_start = rss_kb(proc.pid)
            with httpx.Client(timeout=120) as c:  # warm-up: every lazy allocation happens now
                for i, kind in enumerate(["chat", "completion", "embeddings", "chat_stream"] * 4):
                    one(c, url, model_id, kind, random.Random(i))
            rss_before = rss_kb(proc.pid)
            results, wall = drive(url, model_id, plan, args)
            time.sleep(1.0)  # let cancelled generations wind down
            rss_after = rss_kb(proc.pid)
            alive = proc.poll() is None
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log_lines = [ln for ln in log.read_text().splitlines() if " tokens=" in ln]
    return {
        "results": results,
        "wall": wall,
        "rss_start": rss_start,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "alive": alive,
        "log_lines": log_lines,
    }


def drive(url: str, model_id: str, plan: list[str], args) -> tuple[list, float]:
    """``plan``'s requests sent by --clients threads, each taking the next; returns ((kind,
    status, seconds) a request, the wall seconds)."""
    results: list[tuple[str, int, float]] = []
    lock = threading.Lock()
    next_i = iter(range(len(plan)))

    def worker(w: int) -> None:
        wrng = random.Random(args.seed * 1000 + w)
        # 32 clients queue on one model: on a busy 2-core host a turn can take minutes
        with httpx.Client(timeout=args.timeout) as client:
            while True:
                with lock:
                    i = next(next_i, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    status = one(client, url, model_id, plan[i], wrng)
                except httpx.TimeoutException as e:
                    status = -2  # the client gave up waiting: not a server error
                    print(f"request {i} ({plan[i]}): {type(e).__name__}", file=sys.stderr)
                except httpx.HTTPError as e:
                    status = -1
                    print(f"request {i} ({plan[i]}): {type(e).__name__}: {e}", file=sys.stderr)
                with lock:
                    results.append((plan[i], status, time.perf_counter() - t0))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - t0


def summarise(m: dict, clients: int, kinds: list[str]) -> dict:
    """The soak's figures: statuses, latencies, RSS growth."""
    results, rss_before, rss_after = m["results"], m["rss_before"], m["rss_after"]
    statuses = Counter(s for _, s, _ in results)
    wrong = Counter((k, s) for k, s, _ in results if s != EXPECTED[k] and s >= 0)
    n5xx = sum(n for s, n in statuses.items() if s >= 500 or s == -1)
    timeouts = statuses.get(-2, 0)

    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else 0.0

    lat = [t for _, _, t in results]
    bound = [t for k, _, t in results if k in MODEL_BOUND]
    figures = {
        "clients": clients,
        "requests": len(results),
        "wall_s": round(m["wall"], 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "unexpected": {f"{k}:{s}": n for (k, s), n in wrong.items()},
        "5xx": n5xx,  # and connections the server broke (-1)
        "client_timeouts": timeouts,  # -2: requests still queued after --timeout seconds
        "p50_ms": round(pct(lat, 0.5)),
        "p99_ms": round(pct(lat, 0.99)),
        "model_bound_p50_ms": round(pct(bound, 0.5)),
        "model_bound_p99_ms": round(pct(bound, 0.99)),
        "median_ms_by_kind": {
            k: round(statistics.median([t for kk, _, t in results if kk == k]) * 1000)
            for k in kinds
            if any(kk == k for kk, _, _ in results)
        },
        "rss_start_mb": round(m["rss_start"] / 1024, 1),
        "rss_before_mb": round(rss_before / 1024, 1),
        "rss_after_mb": round(rss_after / 1024, 1),
        "rss_growth_pct": round(100 * (rss_after - rss_before) / rss_before, 1),
        "server_alive": m["alive"],
        "log_lines": len(m["log_lines"]),
    }
    return figures


def failures(figures: dict, m: dict, timeout: float) -> list[str]:
    failed = []
    if figures["5xx"]:
        failed.append(f"{figures['5xx']} 5xx or failed requests")
    if figures["client_timeouts"]:
        failed.append(f"{figures['client_timeouts']} requests still waiting after {timeout:g} s")
    if figures["unexpected"]:
        failed.append(f"unexpected statuses {dict(figures['unexpected'])}")
    if m["rss_after"] > m["rss_before"] * 1.10:
        failed.append(f"RSS grew {figures['rss_growth_pct']}% (limit 10%)")
    if not m["alive"]:
        failed.append("the server died")
    return failed


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
