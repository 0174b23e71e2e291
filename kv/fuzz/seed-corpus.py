#!/usr/bin/env python3
"""Seeds the `decode` fuzz corpus with the payloads of the vLLM frames captured in
tests/data/vllm_kv_events (each frame: u32 LE part count, then u32 LE length + bytes
per part; the payload is the last part). Run from kv/fuzz before `cargo fuzz run`."""
import glob
import os
import struct

here = os.path.dirname(os.path.abspath(__file__))
frames = os.path.join(here, "..", "..", "tests", "data", "vllm_kv_events", "frame*.bin")
out = os.path.join(here, "corpus", "decode")
os.makedirs(out, exist_ok=True)
n = 0
for path in sorted(glob.glob(frames)):
    data = open(path, "rb").read()
    (count,) = struct.unpack_from("<I", data, 0)
    off, parts = 4, []
    for _ in range(count):
        (length,) = struct.unpack_from("<I", data, off)
        off += 4
        parts.append(data[off : off + length])
        off += length
    with open(os.path.join(out, "seed-" + os.path.basename(path)), "wb") as f:
        f.write(parts[-1])
    n += 1
print(f"{n} payloads written to {out}")
