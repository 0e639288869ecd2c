#!/usr/bin/env python3
"""Interleaved benchmark rounds of `xtask bench` over the issue-6 configurations.

The 2-vCPU CI machines share physical cores with other tenants: the same binary on the same
checkpoint alternates for seconds at a time between two speeds ~1.4-1.6x apart. One `bench` run
(median of 21 repetitions) lands in one of them, so this runs every configuration in R interleaved
rounds and prints, per configuration, the best round (neighbours quiet) and the median round.

Usage: python3 scripts/bench_rounds.py [XTASK_BINARY] [ROUNDS]
(defaults: target/release/xtask, 12; build first with `cargo build --release --workspace`; needs
the checkpoints of `cargo xtask pipeline` and `--config configs/stories260k.toml`).
"""
import json
import statistics
import subprocess
import sys

B = sys.argv[1] if len(sys.argv) > 1 else "target/release/xtask"  # binary under test
cfgs = [
 ("stories260K F32", "checkpoints/stories260k/f32.safetensors", "f32", 1),
 ("stories260K INT4 (g32 asym GPTQ), f32 act", "checkpoints/stories260k/int4_native/model.safetensors", "f32", 1),
 ("stories260K INT4 (g32 asym GPTQ), int8 act", "checkpoints/stories260k/int4_native/model.safetensors", "int8", 1),
 ("stories260K INT4, int8 act, 2 threads", "checkpoints/stories260k/int4_native/model.safetensors", "int8", 2),
 ("SsmMoe baseline F32", "checkpoints/phase7/baseline/model.safetensors", "f32", 1),
 ("SsmMoe baseline INT4 (int4_native), f32 act", "checkpoints/phase7/int4_native/model.safetensors", "f32", 1),
 ("SsmMoe baseline INT4 (int4_native), int8 act", "checkpoints/phase7/int4_native/model.safetensors", "int8", 1),
 ("SsmMoe baseline INT4, int8 act, 2 threads", "checkpoints/phase7/int4_native/model.safetensors", "int8", 2),
 ("Phase 7 final (pruned + mixed), f32 act", "checkpoints/phase7/mixed_precision/model.safetensors", "f32", 1),
 ("Phase 7 final (pruned + mixed), int8 act", "checkpoints/phase7/mixed_precision/model.safetensors", "int8", 1),
]
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 12
res = {c[0]: [] for c in cfgs}
for r in range(rounds):
    for name, ck, act, th in cfgs:
        out = subprocess.run([B, "bench", "--checkpoint", ck, "--threads", str(th), "--reps", "21", "--act", act, "--json"], capture_output=True, text=True)
        j = json.loads(out.stdout)
        res[name].append(j)
print(f"| checkpoint / path | prefill tok/s (best round / median round) | decode tok/s (best / median) | prefill 128 + decode 128 ms (best / median) | peak RSS MB |")
print("|---|---|---|---|---|")
for name, *_ in cfgs:
    js = res[name]
    e2e = sorted(j["prefill_plus_decode_ms"] for j in js)
    pf = sorted((j["prefill_tok_s"] for j in js), reverse=True)
    dc = sorted((j["decode_tok_s"] for j in js), reverse=True)
    rss = max(j["peak_rss_kb"] for j in js) / 1024
    med = lambda v: statistics.median(v)
    print(f"| {name} | {pf[0]:,.0f} / {med(pf):,.0f} | {dc[0]:,.0f} / {med(dc):,.0f} | {e2e[0]:.2f} / {med(e2e):.2f} | {rss:.1f} |")
