"""A stand-in for vLLM's KV-event publisher, on libzmq (pyzmq), for kv/tests/it/subscriber.rs.

Replays the captured vLLM frames (tests/data/vllm_kv_events) the way
vllm/distributed/kv_events.py's ZmqEventPublisher sends them: PUB multipart
[topic, seq (8 bytes BE), payload], every message kept in a replay buffer, and a ROUTER
that answers [identity, b"", start_seq] with [identity, b"", seq, payload] per buffered
message with seq >= start_seq, then [identity, b"", -1 (8 bytes BE), b""].

Usage: fake_vllm_publisher.py FRAMES_DIR COUNT PUB_PORT ROUTER_PORT LIVE_SKIP BUFFER_SKIP FIRST
  COUNT         publish frames FIRST..COUNT-1, numbered from 0 (FIRST > 0: a restarted
                engine, whose numbers start again)
  PUB_PORT, ROUTER_PORT  0 for any free port
  LIVE_SKIP     comma-separated seqs not sent live (still buffered), or "-"
  BUFFER_SKIP   comma-separated seqs never buffered (so replay cannot serve them), or "-"

Prints "ports PUB ROUTER" once bound. Publishes only once a subscriber has subscribed
(XPUB sees it) and has made its first replay request, so the live path is exercised.
Exits when stdin closes (the test ended) or after 30 s.
"""

import os
import struct
import sys
import time

import zmq


def read_frame(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack_from("<I", data, 0)
    at, parts = 4, []
    for _ in range(n):
        (length,) = struct.unpack_from("<I", data, at)
        parts.append(data[at + 4 : at + 4 + length])
        at += 4 + length
    return parts


def seqs(arg):
    return set() if arg == "-" else {int(x) for x in arg.split(",")}


def main():
    frames_dir, count, pub_port, router_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    live_skip, buffer_skip, first = seqs(sys.argv[5]), seqs(sys.argv[6]), int(sys.argv[7])
    frames = [read_frame(os.path.join(frames_dir, "frame%03d.bin" % i)) for i in range(first, count)]
    frames = [[topic, seq.to_bytes(8, "big"), payload] for seq, (topic, _, payload) in enumerate(frames)]

    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    router = ctx.socket(zmq.ROUTER)
    for sock, port in ((pub, pub_port), (router, router_port)):
        sock.setsockopt(zmq.LINGER, 0)
    if pub_port:
        pub.bind("tcp://127.0.0.1:%d" % pub_port)
    else:
        pub_port = pub.bind_to_random_port("tcp://127.0.0.1")
    if router_port:
        router.bind("tcp://127.0.0.1:%d" % router_port)
    else:
        router_port = router.bind_to_random_port("tcp://127.0.0.1")
    print("ports %d %d" % (pub_port, router_port), flush=True)

    poller = zmq.Poller()
    poller.register(pub, zmq.POLLIN)
    poller.register(router, zmq.POLLIN)
    poller.register(sys.stdin, zmq.POLLIN)
    buffer = []
    subscribed = replay_asked = published = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for sock, _ in poller.poll(100):
            if sock is sys.stdin:
                if not sys.stdin.buffer.read1(4096):
                    return
            elif sock is pub:
                msg = pub.recv()
                subscribed |= msg[:1] == b"\x01"
            elif sock is router:
                parts = router.recv_multipart()
                if len(parts) != 3:
                    continue
                ident, _, start = parts
                start = int.from_bytes(start, "big")
                for seq, payload in buffer:
                    if seq >= start:
                        router.send_multipart([ident, b"", seq.to_bytes(8, "big"), payload])
                router.send_multipart([ident, b"", (-1).to_bytes(8, "big", signed=True), b""])
                replay_asked = True
        if subscribed and replay_asked and not published:
            published = True
            for topic, seq_bytes, payload in frames:
                seq = int.from_bytes(seq_bytes, "big")
                if seq not in live_skip:
                    pub.send_multipart([topic, seq_bytes, payload])
                if seq not in buffer_skip:
                    buffer.append((seq, payload))


if __name__ == "__main__":
    main()
