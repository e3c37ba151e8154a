#!/usr/bin/env bash
# A/B of the hit path: runs `cargo bench --bench hit_path` alternately in two
# checkouts (A = a baseline commit, B = this tree), N times each, and prints
# per contestant the median ns/op and the range over the runs.
#
#   scripts/bench-hit-ab.sh <baseline checkout dir> [runs=5] [criterion filter] [candidate dir=this tree]
#
# Example: git worktree add /tmp/base <commit>; scripts/bench-hit-ab.sh /tmp/base 5
set -euo pipefail
base=$1
runs=${2:-5}
filter=${3:-hit/}
here=${4:-$(cd "$(dirname "$0")/.." && pwd)}
out=$(mktemp -d)
for i in $(seq 1 "$runs"); do
  for side in A B; do
    dir=$base; target=${CARGO_TARGET_DIR_A:-$base/target}
    if [ "$side" = B ]; then dir=$here; target=${CARGO_TARGET_DIR_B:-$here/target}; fi
    (cd "$dir" && CARGO_TARGET_DIR=$target cargo bench -q -p stampede-cache --bench hit_path -- "$filter" 2>/dev/null) \
      | awk -v side="$side" '/^hit\// {name=$1}
          /time:/ && name {for (i = 1; i <= NF; i++) if ($i == "time:") {print side, name, $(i + 3); name=""}}' >> "$out/all"
  done
done
awk '{v[$1" "$2]=v[$1" "$2]" "$3} END {for (k in v) print k, v[k]}' "$out/all" | sort -k2,2 -k1,1 | while read -r side name values; do
  sorted=$(tr ' ' '\n' <<<"$values" | grep -v '^$' | sort -g)
  n=$(wc -l <<<"$sorted")
  median=$(sed -n "$(( (n + 1) / 2 ))p" <<<"$sorted")
  printf '%s %-55s median %8.2f ns  [%s .. %s]  (%s runs)\n' "$side" "$name" "$median" "$(head -1 <<<"$sorted")" "$(tail -1 <<<"$sorted")" "$n"
done
