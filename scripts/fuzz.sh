#!/usr/bin/env bash
# Fuzzes every parser of outside bytes (the cargo-fuzz crate in fuzz/, see fuzz/README.md).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#   scripts/fuzz.sh cmin [TARGET...]
#
# Installs what it needs (nightly toolchain, cargo-fuzz 0.13.2) when missing, builds every
# target once, then runs each for SECONDS (default 60), one after the other, and prints one line
# per target with its executions. Exits non-zero if any target crashed; the input that crashed
# is kept in fuzz/artifacts/<target>/.
#
# New inputs the fuzzer finds go to fuzz/target/corpus/<target> (ignored by git) and the
# committed seeds in fuzz/corpus/<target> are only read, so a run leaves the working tree as it
# was. FUZZ_GROW_CORPUS=1 writes them into fuzz/corpus/<target> instead; then `cmin` minimises
# each corpus (`cargo fuzz cmin` on a copy): the seeds stay as they are, what else is needed for
# the same coverage is kept as fuzz/corpus/<target>/min-<sha1> (committed), the rest removed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MODE=run
if [ "${1:-}" = cmin ]; then MODE=cmin; SECONDS_EACH=0; else SECONDS_EACH="${1:-60}"; fi
shift || true
ALL_TARGETS=(
  command_json device_response timestamps_nonces enrolment_link config_yaml
  admin_bodies webhook_header edge_assertion client_credential key_ring qr_frame
)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi
case "$SECONDS_EACH" in '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2 ;; esac

CARGO_FUZZ_VERSION=0.13.2
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "== installing the nightly toolchain (minimal profile)"
  rustup toolchain install nightly --profile minimal
fi
if [ "$(cargo +nightly fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --force
fi

echo "== building the fuzz targets (fuzz/target)"
cargo +nightly fuzz build

if [ "$MODE" = cmin ]; then
  HOST=$(rustc -vV | sed -n 's/^host: //p')
  bytes() { find "$1" -type f -printf '%s\n' | awk '{ n += $1 } END { print n + 0 }'; }
  for t in "${TARGETS[@]}"; do
    work="fuzz/target/cmin/$t"
    rm -rf "$work" && mkdir -p "$work"
    cp "fuzz/corpus/$t"/* "$work/"
    before=$(find "$work" -type f | wc -l)
    # Edges only (-use_counters=0; hit counts would keep thousands of files), greedy set cover.
    cargo +nightly fuzz cmin "$t" "$work" -- -rss_limit_mb=2048 -timeout=30 -use_counters=0 -set_cover_merge=1 >"fuzz/target/cmin/$t.log" 2>&1
    # Still more than 200 files or 1 MB: keep those covering the most edges within that.
    if [ "$(find "$work" -type f | wc -l)" -gt "${FUZZ_CORPUS_MAX:-200}" ] ||
      [ "$(bytes "$work")" -gt 1000000 ]; then
      rm -rf "$work.all" "$work.ctl" "$work.empty" && mv "$work" "$work.all" && mkdir -p "$work" "$work.empty"
      "fuzz/target/$HOST/release/$t" -merge=1 -use_counters=0 -merge_control_file="$work.ctl" \
        -rss_limit_mb=2048 -timeout=30 "$work.empty" "$work.all" >>"fuzz/target/cmin/$t.log" 2>&1
      python3 fuzz/seeds/cap_corpus.py "$work.ctl" "${FUZZ_CORPUS_MAX:-200}" 900000 | while read -r f; do
        cp "$f" "$work/"
      done
    fi
    find "fuzz/corpus/$t" -maxdepth 1 -type f ! -name 'seed-*' -delete
    for f in "$work"/*; do
      [ -f "$f" ] || continue
      sum=$(sha1sum "$f" | cut -c1-40)
      # A file the same as a seed is the seed.
      if ! find "fuzz/corpus/$t" -maxdepth 1 -name 'seed-*' -exec cmp -s "$f" {} \; -print | grep -q .; then
        cp "$f" "fuzz/corpus/$t/min-$sum"
      fi
    done
    printf '%-18s %6s inputs -> %4s files, %s bytes\n' "$t" "$before" "$(find "fuzz/corpus/$t" -type f | wc -l)" \
      "$(bytes "fuzz/corpus/$t")"
  done
  exit 0
fi

LOGS=fuzz/target/logs
mkdir -p "$LOGS"
failed=()
for t in "${TARGETS[@]}"; do
  extra=()
  case "$t" in
    config_yaml) extra+=("-dict=fuzz/dict/config_yaml.dict") ;;
    command_json | admin_bodies | device_response) extra+=("-dict=fuzz/dict/json.dict") ;;
  esac
  if [ "${FUZZ_GROW_CORPUS:-0}" = 1 ]; then
    corpora=("fuzz/corpus/$t")
  else
    mkdir -p "fuzz/target/corpus/$t"
    corpora=("fuzz/target/corpus/$t" "fuzz/corpus/$t")
  fi
  log="$LOGS/$t.log"
  start=$(date +%s)
  status=ok
  if ! cargo +nightly fuzz run "$t" "${corpora[@]}" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
    ${extra[@]+"${extra[@]}"} >"$log" 2>&1; then
    status=CRASH
    failed+=("$t")
  fi
  took=$(($(date +%s) - start))
  runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -n1 || true)
  [ -n "$runs" ] || runs=$(grep -o '^Done [0-9]* runs' "$log" | grep -o '[0-9][0-9]*' | tail -n1 || true)
  [ -n "$runs" ] || runs=$(grep -o '^#[0-9]*' "$log" | tr -d '#' | tail -n1 || true)
  rate=$(grep -Eo 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -n1 || true)
  printf '%-18s %-5s %12s executions  %8s exec/s  %4ss\n' "$t" "$status" "${runs:-?}" "${rate:-?}" "$took"
  if [ "$status" != ok ]; then
    grep -E "panicked at|ERROR: libFuzzer|SUMMARY|Test unit written|^Failing input" "$log" | sed 's/^/    /' || true
    echo "    full log: $log"
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "== crashed: ${failed[*]} (reproduce: cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>)" >&2
  exit 1
fi
echo "== ${#TARGETS[@]} targets, no crash"
