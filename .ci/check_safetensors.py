"""CI check: a squish checkpoint opens with Python's safetensors and carries the design's metadata."""
import json
import sys

from safetensors import safe_open
from safetensors.numpy import load_file

path = sys.argv[1]
tensors = load_file(path)
with safe_open(path, framework="numpy") as f:
    meta = f.metadata()
required = ["squish.format", "squish.arch", "squish.config", "squish.tensors", "squish.provenance", "squish.metrics"]
missing = [k for k in required if k not in meta]
assert not missing, f"missing metadata keys: {missing}"
described = json.loads(meta["squish.tensors"])
assert set(described) == set(tensors), "squish.tensors disagrees with the stored tensors"
for name, info in described.items():
    assert list(tensors[name].shape) == info["shape"], name
n = sum(t.size for t in tensors.values())
print(f"python safetensors: {len(tensors)} tensors, {n} values, arch={meta['squish.arch']}, format={meta['squish.format']}")
