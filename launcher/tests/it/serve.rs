//! `cohort serve` end to end, in front of real `cohort sim` processes: streaming (curl
//! style and the official `openai` Python client), KV-aware stickiness against
//! round-robin spread (read from the engines' own prefix-cache counters), KV-aware
//! routing fed by the engines' KV events (`--kv-events`), migration of
//! a stream whose engine is killed, disaggregation, 429, client disconnect, and a
//! malformed body's 400.
//!
//! Every child is killed and reaped on drop; all traffic stays on 127.0.0.1.

use super::fixtures::cohort;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process killed and reaped on drop.
struct Proc {
    child: Child,
    /// Every stderr line so far (read by a thread).
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `cohort ARGS` and waits (≤ 20 s) for a stderr line containing `marker`;
    /// returns it with the process.
    fn start(args: &[&str], marker: &str) -> (Proc, Vec<String>) {
        let mut child = cohort()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cohort starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Proc { child, lines: rx };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match p.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(marker);
                    seen.push(line);
                    if hit {
                        return (p, seen);
                    }
                }
                Err(_) => {
                    let _ = p.child.kill();
                    panic!(
                        "`cohort {}` did not print `{marker}`:\n{}",
                        args.join(" "),
                        seen.join("\n")
                    );
                }
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn url_in(line: &str) -> String {
    let start = line.find("http://").expect("a URL");
    line[start..]
        .split(|c: char| c.is_whitespace() || c == ',' || c == '`')
        .next()
        .unwrap()
        .to_owned()
}

/// `cohort sim` with `extra` flags: the process and its instances' URLs.
fn sim(instances: u32, extra: &[&str]) -> (Proc, Vec<String>) {
    let (p, lines) = sim_lines(instances, extra);
    (p, lines.iter().map(|l| url_in(l)).collect())
}

/// `cohort sim` with `extra` flags: the process and its instances' `listening on` lines.
fn sim_lines(instances: u32, extra: &[&str]) -> (Proc, Vec<String>) {
    let n = instances.to_string();
    let mut args = vec!["sim", "--port", "0", "--threads", "1", "--instances", &n];
    args.extend_from_slice(extra);
    let (p, mut lines) = Proc::start(&args, "listening on");
    while lines.iter().filter(|l| l.contains("listening on")).count() < instances as usize {
        lines.push(
            p.lines
                .recv_timeout(Duration::from_secs(10))
                .expect("more instances"),
        );
    }
    lines.retain(|l| l.contains("listening on"));
    (p, lines)
}

/// `cohort serve` with `args` (after `--port 0`): the process and its URL.
fn serve(args: &[&str]) -> (Proc, String) {
    let mut all = vec![
        "serve",
        "--port",
        "0",
        "--threads",
        "2",
        "--health-interval-s",
        "0.2",
    ];
    all.extend_from_slice(args);
    let (p, lines) = Proc::start(&all, "serving `");
    let url = url_in(lines.last().unwrap());
    (p, url)
}

/// A minimal HTTP/1.1 exchange (`Connection: close`); de-chunks the body.
struct Http {
    status: u16,
    reader: BufReader<TcpStream>,
    chunked: bool,
    left_in_chunk: usize,
    done: bool,
}

impl Http {
    fn send(url: &str, method: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> Http {
        let addr = url.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).unwrap();
        let mut reader = BufReader::new(s);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let mut chunked = false;
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if line
                .to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked")
            {
                chunked = true;
            }
        }
        Http {
            status,
            reader,
            chunked,
            left_in_chunk: 0,
            done: false,
        }
    }

    /// The next bytes of the body (empty at its end).
    fn read_some(&mut self) -> Vec<u8> {
        if self.done {
            return Vec::new();
        }
        if !self.chunked {
            let mut v = Vec::new();
            let _ = self.reader.read_to_end(&mut v);
            self.done = true;
            return v;
        }
        if self.left_in_chunk == 0 {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                self.done = true;
                return Vec::new();
            }
            let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            if size == 0 {
                self.done = true;
                return Vec::new();
            }
            self.left_in_chunk = size;
        }
        let mut buf = vec![0; self.left_in_chunk];
        self.reader.read_exact(&mut buf).expect("chunk data");
        self.left_in_chunk = 0;
        let mut crlf = [0; 2];
        self.reader.read_exact(&mut crlf).expect("chunk end");
        buf
    }

    fn body(mut self) -> String {
        let mut all = Vec::new();
        loop {
            let b = self.read_some();
            if b.is_empty() {
                return String::from_utf8(all).unwrap();
            }
            all.extend(b);
        }
    }
}

/// Reads SSE `data:` payloads one at a time.
struct Events {
    http: Http,
    buf: String,
}

impl Events {
    fn new(http: Http) -> Self {
        Events {
            http,
            buf: String::new(),
        }
    }

    fn next(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let ev: String = self.buf.drain(..i + 2).collect();
                if let Some(d) = ev.trim().strip_prefix("data: ") {
                    return Some(d.to_owned());
                }
                continue;
            }
            let more = self.http.read_some();
            if more.is_empty() {
                return None;
            }
            self.buf.push_str(std::str::from_utf8(&more).unwrap());
        }
    }
}

fn get(url: &str, path: &str) -> (u16, String) {
    let h = Http::send(url, "GET", path, "", &[]);
    (h.status, h.body())
}

fn post(url: &str, path: &str, body: &str) -> (u16, String) {
    let h = Http::send(url, "POST", path, body, &[]);
    (h.status, h.body())
}

/// The sum of a metric's samples in a Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn engine_metric(url: &str, name: &str) -> f64 {
    metric(&get(url, "/metrics").1, name)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

const MODEL: &str = "llama-3.1-8b";

#[test]
fn streamed_chat_works_and_bad_requests_are_named() {
    let (_sim, urls) = sim(2, &["--speedup", "inf"]);
    let (_fe, fe) = serve(&[
        "--policy",
        "round-robin",
        "--worker",
        &urls[0],
        "--worker",
        &urls[1],
    ]);
    let body = format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"hello there"}}],"max_tokens":6,"stream":true,"stream_options":{{"include_usage":true}}}}"#
    );
    let h = Http::send(&fe, "POST", "/v1/chat/completions", &body, &[]);
    assert_eq!(h.status, 200);
    let mut ev = Events::new(h);
    let mut content = String::new();
    let mut finishes = 0;
    let mut usage = None;
    let mut done = false;
    while let Some(d) = ev.next() {
        if d == "[DONE]" {
            done = true;
            continue;
        }
        let v = json(&d);
        assert_eq!(v["object"], "chat.completion.chunk");
        if !v["usage"].is_null() {
            usage = Some(v["usage"].clone());
            continue;
        }
        content.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        finishes += usize::from(!v["choices"][0]["finish_reason"].is_null());
    }
    assert!(done, "the stream ends with [DONE]");
    assert_eq!(finishes, 1);
    assert_eq!(content.split_whitespace().count(), 6, "{content:?}");
    let usage = usage.expect("a usage chunk");
    assert_eq!(usage["completion_tokens"], 6);
    assert!(
        usage["prompt_tokens_details"]["cached_tokens"].is_u64(),
        "{usage}"
    );

    // A malformed body: 400 naming the field.
    let (s, b) = post(
        &fe,
        "/v1/completions",
        &format!(r#"{{"model":"{MODEL}","prompt":"x","max_tokens":"ten"}}"#),
    );
    assert_eq!(s, 400, "{b}");
    let e = json(&b);
    assert_eq!(e["error"]["param"], "max_tokens", "{b}");
    assert_eq!(e["error"]["type"], "BadRequestError");
    let (s, b) = post(
        &fe,
        "/v1/chat/completions",
        &format!(r#"{{"model":"{MODEL}","messages":[{{"content":"x"}}]}}"#),
    );
    assert_eq!(
        (s, json(&b)["error"]["param"].as_str()),
        (400, Some("messages[0].role")),
        "{b}"
    );
    let (s, b) = post(&fe, "/v1/completions", r#"{"model":"nope","prompt":"x"}"#);
    assert_eq!(
        (s, json(&b)["error"]["param"].as_str()),
        (404, Some("model")),
        "{b}"
    );
    let (s, _) = post(&fe, "/v1/completions", "{\"model\": ");
    assert_eq!(s, 400);
    assert_eq!(get(&fe, "/health").0, 200);
    assert_eq!(json(&get(&fe, "/v1/models").1)["data"][0]["id"], MODEL);
    // Ready once both workers answered a probe.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&fe, "/ready").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "never ready: {}",
            get(&fe, "/ready").1
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = get(&fe, "/metrics").1;
    assert_eq!(metric(&m, "cohort_router_errors_total"), 4.0, "{m}");
    assert!(
        m.contains("cohort_router_errors_total{type=\"NotFoundError\"} 1"),
        "{m}"
    );
    assert!(metric(&m, "cohort_router_ttft_seconds_count") >= 1.0);
}

/// Sends `n` completions sharing a long prefix (different tails) through `fe`.
fn send_shared_prefix(fe: &str, n: usize) {
    let prefix =
        "the rack holds eight nodes of four GPUs each and every node runs one engine ".repeat(20);
    for i in 0..n {
        let body = format!(
            r#"{{"model":"{MODEL}","prompt":"{prefix} question number {i}","max_tokens":2}}"#
        );
        let (s, b) = post(fe, "/v1/completions", &body);
        assert_eq!(s, 200, "{b}");
    }
}

#[test]
fn kv_aware_keeps_a_prefix_on_one_worker_and_round_robin_spreads_it() {
    for (policy, sticky) in [("kv-aware", true), ("round-robin", false)] {
        let (_sim, urls) = sim(2, &["--speedup", "inf"]);
        // Overlap weighted 2: a cache hit on the whole prefix must beat the KV blocks the
        // previous request of the same prefix still shows in a scrape of the engine's
        // metrics taken while it ran (at weight 1 the two are equal and the pick a tie).
        let (_fe, fe) = serve(&[
            "--policy",
            policy,
            "--overlap-weight",
            "2",
            "--worker",
            &urls[0],
            "--worker",
            &urls[1],
        ]);
        send_shared_prefix(&fe, 6);
        let queries: Vec<f64> = urls
            .iter()
            .map(|u| engine_metric(u, "vllm:prefix_cache_queries_total"))
            .collect();
        let hits: Vec<f64> = urls
            .iter()
            .map(|u| engine_metric(u, "vllm:prefix_cache_hits_total"))
            .collect();
        eprintln!("{policy}: prefix-cache queries per engine {queries:?}, hits {hits:?}");
        let busy = queries.iter().filter(|&&q| q > 0.0).count();
        if sticky {
            assert_eq!(busy, 1, "{policy}: {queries:?}");
            // One cold prefill, then five hits on the same engine.
            assert!(hits.iter().sum::<f64>() >= 5.0 * 1000.0, "{hits:?}");
        } else {
            assert_eq!(busy, 2, "{policy}: {queries:?}");
        }
    }
}

/// Tokens per KV block in the KV-event test: not the default 16, so a side that ignored
/// `--block-size` would hash differently from the other and never match.
const EVENT_BLOCK: u32 = 32;

/// `len` token ids never used before (`next` is the first free id; well inside the
/// model's vocabulary for the few thousand tokens a test uses), so prompts share no block.
fn fresh_ids(next: &mut u32, len: u32) -> Vec<u32> {
    let ids = (*next..*next + len).collect();
    *next += len;
    ids
}

/// A completion of the token-id prompt `ids` (no tokenizer on either side, so the
/// router and an engine addressed directly see the same tokens).
fn complete_ids(url: &str, ids: &[u32]) {
    let body = serde_json::json!({"model": MODEL, "prompt": ids, "max_tokens": 2}).to_string();
    let (s, b) = post(url, "/v1/completions", &body);
    assert_eq!(s, 200, "{b}");
}

/// Where the router sent one request, read from both sides.
#[derive(Debug)]
struct Routed {
    /// The engine whose prefix-cache queries rose (the only one).
    engine: usize,
    /// Prompt tokens that engine served from its prefix cache.
    hit_tokens: f64,
    /// Blocks the router's index said the chosen engine held.
    predicted_blocks: f64,
}

/// Sends `ids` through the frontend `fe` and tells which of `engines` ran it.
fn route_ids(fe: &str, engines: &[String], ids: &[u32]) -> Routed {
    let counters = || -> Vec<(f64, f64)> {
        engines
            .iter()
            .map(|u| {
                let m = get(u, "/metrics").1;
                (
                    metric(&m, "vllm:prefix_cache_queries_total"),
                    metric(&m, "vllm:prefix_cache_hits_total"),
                )
            })
            .collect()
    };
    let predicted = || metric(&get(fe, "/metrics").1, "cohort_router_kv_hit_blocks_total");
    let (before, p0) = (counters(), predicted());
    complete_ids(fe, ids);
    let (after, p1) = (counters(), predicted());
    let ran: Vec<usize> = (0..engines.len())
        .filter(|&i| after[i].0 > before[i].0)
        .collect();
    assert_eq!(ran.len(), 1, "one engine runs it: {before:?} → {after:?}");
    let engine = ran[0];
    Routed {
        engine,
        hit_tokens: after[engine].1 - before[engine].1,
        predicted_blocks: p1 - p0,
    }
}

/// Waits (≤ 20 s) until the router has applied every KV event `engines[target]`
/// published so far: sends a fresh sentinel prompt straight to that engine, then the
/// same prompt through the router, until the router sends one there predicting its
/// blocks. One publisher's events arrive in order, so everything before the sentinel
/// has arrived too. Returns the sentinels it took.
fn wait_for_events(fe: &str, engines: &[String], target: usize, next: &mut u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let blocks = 4;
    for tries in 1.. {
        let sentinel = fresh_ids(next, blocks * EVENT_BLOCK + 3);
        complete_ids(&engines[target], &sentinel);
        let r = route_ids(fe, engines, &sentinel);
        if r.engine == target && r.predicted_blocks == f64::from(blocks) {
            return tries;
        }
        assert!(
            Instant::now() < deadline,
            "the router never learnt engine {target}'s blocks from its KV events \
             ({tries} sentinels; last {r:?})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    unreachable!()
}

#[test]
fn kv_aware_follows_the_engines_kv_events() {
    let bs = EVENT_BLOCK.to_string();
    let (_sim, lines) = sim_lines(
        2,
        &[
            "--speedup",
            "inf",
            "--block-size",
            &bs,
            "--kv-events-port",
            "0",
        ],
    );
    let urls: Vec<String> = lines.iter().map(|l| url_in(l)).collect();
    let events: Vec<String> = lines
        .iter()
        .map(|l| {
            let port = l.rsplit("tcp port ").next().unwrap_or_default().trim();
            port.parse::<u16>()
                .unwrap_or_else(|_| panic!("no KV-event port in `{l}`"));
            format!("tcp://127.0.0.1:{port}")
        })
        .collect();
    let (_fe, fe) = serve(&[
        "--policy",
        "kv-aware",
        // A health probe that catches an engine mid-request counts its blocks as load
        // for a moment, about as many as a cached prefix saves: weigh the cache above.
        "--overlap-weight",
        "2",
        "--block-size",
        &bs,
        "--worker",
        &urls[0],
        "--worker",
        &urls[1],
        "--kv-events",
        &events[0],
        "--kv-events",
        &events[1],
    ]);
    // Each round warms a new prefix on one engine, bypassing the router, so only that
    // engine's events know it; the router's own decisions never saw it, and the engines
    // are otherwise alike. Alternating engines, six rounds by chance would be 1 in 64.
    let prefix_blocks = 20;
    let mut next = 1000;
    // Without a replay endpoint, events published before a subscriber connects are
    // lost: first make sure both subscriptions deliver.
    for engine in 0..2 {
        let sentinels = wait_for_events(&fe, &urls, engine, &mut next);
        eprintln!("engine {engine}: events delivered after {sentinels} sentinels");
    }
    for round in 0..6 {
        let target = round % 2;
        let prefix = fresh_ids(&mut next, prefix_blocks * EVENT_BLOCK + 7);
        complete_ids(&urls[target], &prefix);
        let sentinels = wait_for_events(&fe, &urls, target, &mut next);
        for _ in 0..3 {
            let mut ids = prefix.clone();
            ids.extend(fresh_ids(&mut next, 20));
            let r = route_ids(&fe, &urls, &ids);
            eprintln!(
                "round {round}: warmed engine {target} ({sentinels} sentinels), routed {r:?}"
            );
            assert_eq!(r.engine, target, "round {round}: {r:?}");
            assert_eq!(r.predicted_blocks, f64::from(prefix_blocks), "{r:?}");
            assert!(
                r.hit_tokens >= f64::from(prefix_blocks * EVENT_BLOCK),
                "the engine served the prefix from its cache: {r:?}"
            );
        }
    }
}

#[test]
fn a_stream_survives_its_engine_being_killed() {
    // Two engines in separate processes, so one can die.
    let (mut a, ua) = sim(1, &["--speedup", "1", "--eos-mean-tokens", "0"]);
    let (mut b, ub) = sim(1, &["--speedup", "1", "--eos-mean-tokens", "0"]);
    let (_fe, fe) = serve(&[
        "--policy",
        "least-loaded",
        "--worker",
        &ua[0],
        "--worker",
        &ub[0],
        "--model",
        MODEL,
    ]);
    let total = 300;
    let body = format!(
        r#"{{"model":"{MODEL}","prompt":"tell me a long story","max_tokens":{total},"stream":true,"return_token_ids":true,"stream_options":{{"include_usage":true}}}}"#
    );
    let mut ev = Events::new(Http::send(&fe, "POST", "/v1/completions", &body, &[]));
    let mut ids: Vec<u64> = Vec::new();
    let mut text = String::new();
    let mut killed = false;
    let mut usage = None;
    let mut finish = None;
    while let Some(d) = ev.next() {
        if d == "[DONE]" {
            break;
        }
        let v = json(&d);
        assert!(v.get("error").is_none(), "the client saw an error: {d}");
        if !v["usage"].is_null() {
            usage = Some(v["usage"].clone());
            continue;
        }
        let c = &v["choices"][0];
        ids.extend(
            c["token_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap()),
        );
        text.push_str(c["text"].as_str().unwrap());
        if !c["finish_reason"].is_null() {
            finish = Some(c["finish_reason"].clone());
        }
        if !killed && ids.len() >= 20 {
            // Kill whichever engine is running the request.
            if engine_metric(&ua[0], "vllm:num_requests_running") > 0.0 {
                a.kill();
            } else {
                b.kill();
            }
            killed = true;
        }
    }
    assert!(killed);
    assert_eq!(ids.len(), total, "every token once");
    assert_eq!(text.split_whitespace().count(), total);
    assert_eq!(finish, Some(serde_json::json!("length")));
    assert_eq!(usage.unwrap()["completion_tokens"], total);
    let m = get(&fe, "/metrics").1;
    assert_eq!(metric(&m, "cohort_router_migrations_total"), 1.0, "{m}");
}

#[test]
fn full_queue_gets_429_and_disconnect_cancels_upstream() {
    let (_sim, urls) = sim(1, &["--speedup", "1", "--eos-mean-tokens", "0"]);
    let (_fe, fe) = serve(&[
        "--worker",
        &urls[0],
        "--max-inflight",
        "1",
        "--queue-size",
        "0",
    ]);
    let body =
        format!(r#"{{"model":"{MODEL}","prompt":"a long one","max_tokens":2000,"stream":true}}"#);
    let mut ev = Events::new(Http::send(&fe, "POST", "/v1/completions", &body, &[]));
    assert!(ev.next().is_some());
    let (s, b) = post(
        &fe,
        "/v1/completions",
        &format!(r#"{{"model":"{MODEL}","prompt":"x","max_tokens":2}}"#),
    );
    assert_eq!(s, 429, "{b}");
    assert_eq!(json(&b)["error"]["type"], "RateLimitError");
    assert_eq!(engine_metric(&urls[0], "vllm:num_requests_running"), 1.0);
    // The client goes away: the engine's request is aborted, the slot freed.
    drop(ev);
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine_metric(&urls[0], "vllm:num_requests_running") > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the engine still runs the abandoned request"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (s, b) = post(
        &fe,
        "/v1/completions",
        &format!(r#"{{"model":"{MODEL}","prompt":"x","max_tokens":2}}"#),
    );
    assert_eq!(s, 200, "{b}");
}

#[test]
fn disaggregated_prefill_then_decode() {
    let (_p, pre) = sim(1, &["--speedup", "inf", "--role", "prefill"]);
    let (_d, dec) = sim(1, &["--speedup", "inf", "--role", "decode"]);
    let (_fe, fe) = serve(&[
        "--prefill",
        &pre[0],
        "--decode",
        &dec[0],
        "--disagg-threshold",
        "0",
    ]);
    let body = format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"split me across two engines"}}],"max_tokens":5,"stream":true}}"#
    );
    let h = Http::send(&fe, "POST", "/v1/chat/completions", &body, &[]);
    assert_eq!(h.status, 200);
    let text = h.body();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("\"error\""), "{text}");
    // The prompt was computed on the prefill engine, the tokens on the decode engine.
    assert!(engine_metric(&pre[0], "vllm:prompt_tokens_total") > 0.0);
    assert_eq!(engine_metric(&dec[0], "vllm:generation_tokens_total"), 5.0);
    let m = get(&fe, "/metrics").1;
    assert!(
        m.contains("cohort_router_disagg_total{path=\"remote\"} 1"),
        "{m}"
    );
}

#[test]
fn the_official_openai_client_works_through_the_frontend() {
    if std::env::var_os("COHORT_SKIP_PYTHON_TESTS").is_some() {
        return;
    }
    let (_sim, urls) = sim(2, &["--speedup", "inf"]);
    let keys = super::fixtures::TempDir::new("serve-keys");
    let key_file = keys.path().join("keys");
    std::fs::write(&key_file, "# test key\nsk-test-123\n").unwrap();
    let (_fe, fe) = serve(&[
        "--worker",
        &urls[0],
        "--worker",
        &urls[1],
        "--api-key-file",
        key_file.to_str().unwrap(),
    ]);
    // Without the key: 401.
    assert_eq!(post(&fe, "/v1/completions", "{}").0, 401);
    let script = r#"
import sys, openai
from openai import OpenAI
c = OpenAI(base_url=sys.argv[1], api_key="sk-test-123", max_retries=0, timeout=20)
model = c.models.list().data[0].id
msgs = [{"role": "user", "content": "plan the prefill and decode pools of one rack"}]
r = c.chat.completions.create(model=model, messages=msgs, max_tokens=8)
assert r.choices[0].message.content and r.usage.completion_tokens == 8, r
parts, usage = [], None
for ch in c.chat.completions.create(model=model, messages=msgs, max_tokens=8, stream=True,
                                    stream_options={"include_usage": True}):
    if ch.usage is not None:
        usage = ch.usage
    elif ch.choices[0].delta.content:
        parts.append(ch.choices[0].delta.content)
assert len("".join(parts).split()) == 8 and usage.completion_tokens == 8, (parts, usage)
assert usage.prompt_tokens_details.cached_tokens > 0, usage
t = "".join(x.choices[0].text for x in c.completions.create(model=model, prompt="the rack", max_tokens=4, stream=True))
assert len(t.split()) == 4, t
try:
    c.completions.create(model=model, prompt="a", max_tokens="many")
    raise AssertionError("bad max_tokens accepted")
except openai.BadRequestError as e:
    assert e.body["param"] == "max_tokens", e.body
try:
    OpenAI(base_url=sys.argv[1], api_key="wrong", max_retries=0).models.list()
    raise AssertionError("wrong key accepted")
except openai.AuthenticationError:
    pass
print("openai client: all checks passed")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &format!("{fe}/v1")])
        .output()
        .expect("python3 runs (set COHORT_SKIP_PYTHON_TESTS=1 to skip)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
