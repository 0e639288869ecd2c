"""CI check: a squish checkpoint opens with Python's safetensors and carries the design's metadata.

Format 2 (compact header): every stored F32/F16 entry is a tensor; `W.qweight` (+ `W.scales`,
`W.zeros` when asymmetric) is the quantized tensor `W`, whose bits/cols/group are listed in
`squish.quant` in name order. Format 1 files described every tensor in `squish.tensors`.
"""
import json
import math
import sys

from safetensors import safe_open
from safetensors.numpy import load_file

path = sys.argv[1]
tensors = load_file(path)
with safe_open(path, framework="numpy") as f:
    meta = f.metadata()
required = ["squish.format", "squish.arch", "squish.config", "squish.provenance"]
missing = [k for k in required if k not in meta]
assert not missing, f"missing metadata keys: {missing}"
config = json.loads(meta["squish.config"])
assert config["arch"] == meta["squish.arch"], "squish.arch disagrees with squish.config"
json.loads(meta["squish.provenance"])
version = meta["squish.format"]
parts = (".qweight", ".scales", ".zeros")
if version == "1":
    described = json.loads(meta["squish.tensors"])
    for name, info in described.items():
        if name in tensors:
            assert list(tensors[name].shape) == info["shape"], name
    logical = len(described)
else:
    assert version == "2", f"unknown squish.format {version}"
    quant = sorted(n[: -len(".qweight")] for n in tensors if n.endswith(".qweight"))
    entries = [e for e in meta.get("squish.quant", "").split(",") if e]
    assert len(entries) == len(quant), "squish.quant disagrees with the stored .qweight tensors"
    for name, entry in zip(quant, entries):
        bits, cols, group = (int(x) for x in entry.split("/"))
        assert bits in (4, 8) and 1 <= group <= cols, (name, entry)
        q, s = tensors[name + ".qweight"], tensors[name + ".scales"]
        rows = q.shape[0]
        assert q.dtype.name == "uint8" and q.shape == (rows, math.ceil(cols * bits / 8)), name
        assert s.dtype.name == "float16" and s.shape == (rows, math.ceil(cols / group)), name
        if name + ".zeros" in tensors:
            assert tensors[name + ".zeros"].shape == s.shape, name
    plain = [n for n in tensors if not n.endswith(parts)]
    for n in plain:
        assert tensors[n].dtype.name in ("float32", "float16"), n
    orphans = [n for n in tensors if n.endswith(parts) and n.rsplit(".", 1)[0] not in quant]
    assert not orphans, f"quantization parts without a .qweight: {orphans}"
    logical = len(plain) + len(quant)
n = sum(t.size for t in tensors.values())
print(f"python safetensors: {len(tensors)} stored / {logical} logical tensors, {n} values, arch={meta['squish.arch']}, format={version}")
