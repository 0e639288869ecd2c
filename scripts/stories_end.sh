#!/bin/bash
# Stories that end: how many of 10 prompts' generations reach the end of a story within 512
# tokens, greedy and sampled (temperature 1, top-p 0.9, seed 42). A generation "ended" when its
# text differs from the same run with --ignore-eos (which goes on past the end).
# Usage: scripts/stories_end.sh XTASK CHECKPOINT...
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 XTASK CHECKPOINT..." >&2
  exit 2
fi
xtask=$1
shift
prompts=("Once upon a time" "One day, a little girl named Lily" "Tom and his dog"
  "There was a big red ball" "The sun was shining" "Sara wanted to bake a cake" "A little bird"
  "Ben found a box" "It was a rainy day" "Mom said")
for ckpt in "$@"; do
  for mode in greedy sampled; do
    if [ "$mode" = greedy ]; then opt=(--temperature 0); else opt=(--temperature 1 --topp 0.9 --seed 42); fi
    ended=0
    for p in "${prompts[@]}"; do
      a=$("$xtask" generate --checkpoint "$ckpt" --prompt "$p" --steps 512 "${opt[@]}" 2>/dev/null | sha256sum)
      b=$("$xtask" generate --checkpoint "$ckpt" --prompt "$p" --steps 512 "${opt[@]}" --ignore-eos 2>/dev/null | sha256sum)
      if [ "$a" != "$b" ]; then ended=$((ended + 1)); fi
    done
    echo "$ckpt $mode: $ended/10 ended"
  done
done
