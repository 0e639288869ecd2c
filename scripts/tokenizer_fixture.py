#!/usr/bin/env python3
"""Make crates/core/tests/fixtures/tokenizer_valid_tok512.json: an independent reference for
squish's llama2.c-exact BPE encoder, computed with Google's `sentencepiece` on tok512.model.

    pip install sentencepiece protobuf
    python3 scripts/tokenizer_fixture.py [--data DIR]   # DIR defaults to ../shared/data

What it does:
1. Loads tok512.model and checks its spec: BPE, identity normalization, add_dummy_prefix,
   byte_fallback. Checks that its 512 pieces and scores equal tok512.bin's (llama2.c's exporter
   maps `▁` to a space and <s>/</s> to "\\n<s>\\n"/"\\n</s>\\n").
2. The model's normalizer also has remove_extra_whitespaces=true (the proto default; llama2.c's
   train_vocab never sets it). llama2.c's run.c encode() does not do that: it keeps every space.
   Since the target is llama2.c's behaviour, the reference is made with a copy of the model whose
   normalizer has remove_extra_whitespaces=false. The unmodified model's result is reported too.
3. Encodes the WHOLE of valid.txt as one string, BOS prepended, and writes: the source sha256,
   the token count, the sha256 of the ids as little-endian u32, the first and last 64 ids.
   The ids of the whole file are NOT written (that would be a copy of the data).
"""

import argparse
import datetime
import hashlib
import json
import os
import re
import struct
import sys

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates/core/tests/fixtures/tokenizer_valid_tok512.json")


def read_tokenizer_bin(path, vocab_size):
    with open(path, "rb") as f:
        data = f.read()
    (max_len,) = struct.unpack_from("<i", data, 0)
    off, pieces = 4, []
    for _ in range(vocab_size):
        score, n = struct.unpack_from("<fi", data, off)
        off += 8
        pieces.append((data[off : off + n].decode("utf-8"), score))
        off += n
    assert off == len(data), f"{len(data) - off} trailing bytes"
    return max_len, pieces


def ids_sha256(ids):
    return hashlib.sha256(struct.pack(f"<{len(ids)}I", *ids)).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("SQUISH_SHARED_DATA", os.path.join(ROOT, "../shared/data")))
    args = ap.parse_args()
    model_path = os.path.join(args.data, "models/stories260K/tok512.model")
    bin_path = os.path.join(args.data, "models/stories260K/tok512.bin")
    text_path = os.path.join(args.data, "tinystories/valid.txt")

    proto = model_pb2.ModelProto()
    with open(model_path, "rb") as f:
        proto.ParseFromString(f.read())
    ns, ts = proto.normalizer_spec, proto.trainer_spec
    assert ts.model_type == model_pb2.TrainerSpec.BPE, ts.model_type
    assert ns.name == "identity" and not ns.precompiled_charsmap, ns
    assert ns.add_dummy_prefix and ts.byte_fallback
    print(f"normalizer: name={ns.name} add_dummy_prefix={ns.add_dummy_prefix} "
          f"remove_extra_whitespaces={ns.remove_extra_whitespaces} escape_whitespaces={ns.escape_whitespaces}; "
          f"byte_fallback={ts.byte_fallback}", file=sys.stderr)

    _, bin_pieces = read_tokenizer_bin(bin_path, len(proto.pieces))
    for i, (p, (bp, bs)) in enumerate(zip(proto.pieces, bin_pieces)):
        want = {"<s>": "\n<s>\n", "</s>": "\n</s>\n"}.get(p.piece, p.piece.replace("\u2581", " "))
        assert (want, p.score) == (bp, bs), f"piece {i}: model {p.piece!r} {p.score} vs bin {bp!r} {bs}"
    print(f"tok512.model pieces and scores == tok512.bin ({len(bin_pieces)} tokens)", file=sys.stderr)

    with open(text_path, "rb") as f:
        raw = f.read()
    text = raw.decode("utf-8")

    def encode(remove_extra_whitespaces):
        p = model_pb2.ModelProto()
        p.CopyFrom(proto)
        p.normalizer_spec.remove_extra_whitespaces = remove_extra_whitespaces
        sp = spm.SentencePieceProcessor(model_proto=p.SerializeToString())
        return [sp.bos_id()] + sp.encode(text, out_type=int)

    ids = encode(False)
    stock = encode(True)
    first_diff = next((i for i, (a, b) in enumerate(zip(ids, stock)) if a != b), min(len(ids), len(stock)))
    print(f"reference (remove_extra_whitespaces=false): {len(ids)} ids; stock model: {len(stock)} ids, "
          f"first difference at index {first_diff}", file=sys.stderr)

    fixture = {
        "source": "tinystories/valid.txt",
        "source_sha256": hashlib.sha256(raw).hexdigest(),
        "source_bytes": len(raw),
        "tokenizer": "models/stories260K/tok512.bin",
        "bos": True,
        "eos": False,
        "token_count": len(ids),
        "ids_sha256_le_u32": ids_sha256(ids),
        "head": ids[:64],
        "tail": ids[-64:],
        "stock_model_token_count": len(stock),
        "stock_model_ids_sha256_le_u32": ids_sha256(stock),
        "stock_model_first_difference": first_diff,
        "how_made": (
            f"scripts/tokenizer_fixture.py with sentencepiece {spm.__version__} on tok512.model "
            f"(normalizer remove_extra_whitespaces set to false to match llama2.c), "
            f"whole valid.txt as one string, BOS prepended, {datetime.date.today().isoformat()}"
        ),
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        out = json.dumps(fixture, indent=1)
        # one line per id list
        out = re.sub(r"\[([0-9,\s]*)\]", lambda m: "[" + ", ".join(t.strip() for t in m.group(1).split(",")) + "]", out)
        f.write(out + "\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
