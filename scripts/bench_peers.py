#!/usr/bin/env python3
"""Issue 19's side-by-side run: squish (`xtask bench`), llama2.c `run.c` and llama.cpp `llama-bench`
on stories260K, plus squish at 1 and 2 threads on the SsmMoe checkpoints, in interleaved rounds.

The peers are built outside the repository from their public sources and never committed:
  llama2.c:  gcc -Ofast -march=native -o run run.c -lm
  llama.cpp: cmake -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON && \
             cmake --build build --target llama-bench llama-convert-llama2c-to-ggml
             build/bin/llama-convert-llama2c-to-ggml --copy-vocab-from-model tok512.bin \
               --llama2c-model stories260K.bin --llama2c-output-model stories260K.gguf

Usage: python3 scripts/bench_peers.py ROUNDS XTASK RUN_C LLAMA_BENCH GGUF CHECKPOINT...
  CHECKPOINT: LABEL=PATH[:int8[:rtn]] (int8 = `--act int8`, rtn = `--rtn int4` first); each runs
  at 1 and 2 threads. The stories260K llama2.c files come from ../shared/data/models/stories260K.
Set SQUISH_SIMD to force squish's path; run.c and llama.cpp run only when it is unset.
Prints one JSON line per measurement and, at the end, the median over rounds of each.
"""
import json
import os
import re
import statistics
import subprocess
import sys
from collections import defaultdict

if len(sys.argv) < 7:
    sys.exit(__doc__)
rounds, xtask, run_c, llama_bench, gguf = int(sys.argv[1]), *sys.argv[2:6]
models = []
for spec in sys.argv[6:]:
    label, rest = spec.split("=", 1)
    path, *flags = rest.split(":")
    models.append((label, path, flags))
shared = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "models", "stories260K")
peers = "SQUISH_SIMD" not in os.environ
results = defaultdict(list)


def emit(key, value, r):
    results[key].append(value)
    print(json.dumps({"round": r, "what": key, "value": value}), flush=True)


for r in range(1, rounds + 1):
    for label, path, flags in models:
        for threads in (1, 2):
            cmd = [xtask, "bench", "--checkpoint", path, "--threads", str(threads), "--reps", "11", "--json"]
            if "int8" in flags:
                cmd += ["--act", "int8"]
            if "rtn" in flags:
                cmd += ["--rtn", "int4"]
            d = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            key = f"squish {label} {threads}thr [{d['simd']}]"
            emit(key + " prefill tok/s", d["prefill_tok_s"], r)
            emit(key + " decode tok/s", d["decode_tok_s"], r)
            emit(key + " prefill128+decode128 ms", d["prefill_plus_decode_ms"], r)
    if peers:
        out = subprocess.run(
            [run_c, os.path.join(shared, "stories260K.bin"), "-z", os.path.join(shared, "tok512.bin"),
             "-t", "0", "-n", "256"], check=True, capture_output=True, text=True)
        m = re.search(r"achieved tok/s: ([0-9.]+)", out.stdout + out.stderr)
        emit("run.c stories260K decode tok/s", float(m.group(1)), r)
        out = subprocess.run(
            [llama_bench, "-m", gguf, "-p", "128", "-n", "128", "-t", "1", "-r", "5", "-o", "json"],
            check=True, capture_output=True, text=True)
        for t in json.loads(out.stdout):
            test = f"pp{t['n_prompt']}" if t["n_prompt"] else f"tg{t['n_gen']}"
            emit(f"llama.cpp stories260K {test} tok/s", t["avg_ts"], r)

print("\nmedian over rounds:")
for key in sorted(results):
    v = results[key]
    print(f"  {key}: {statistics.median(v):.4g} (n={len(v)}, min {min(v):.4g}, max {max(v):.4g})")
