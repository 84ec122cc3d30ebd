#!/usr/bin/env bash
# The GPU benchmark (issue #17), one command on a machine with an NVIDIA GPU and torch 2.11 (the
# CUDA build) in python3, about 6-8 minutes on an H200:
#
#   bench/gpu.sh pack DIR        # on the build machine: build, strip, copy everything needed to DIR
#   DIR/bench/gpu.sh run         # on the GPU machine (or bench/gpu.sh run in a built checkout)
#   bench/gpu.sh run --cpu-check # the same steps at toy sizes on the CPU: checks the script itself
#
# `run` measures, with the stage worker pointed at that machine's libtorch through LD_LIBRARY_PATH
# (the binaries' rpath names the build machine's venv):
#   1. the main job with --gpus 0 at a larger scale (112 px, iResNet-50; sizes below), each stage's
#      time and device, and the GPU memory in use during each stage (nvidia-smi, sampled);
#   2. training throughput, images/s, iResNet-50 + CosFace at 112x112, batch 128 and 512, fp32, AMP
#      (fp16 + loss scaling) and bf16: the project (tch) against PyTorch eager, same script;
#   3. eval-trainset p(x) of the main job's original model on CUDA against the same stage on the CPU
#      (max |difference|), on the default-size main job;
#   4. the first 50 losses of AMP training, project vs PyTorch, from the same weights and batches.
# Results: OUT (default bench/gpu-results/<date>) holds every raw output and summary.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PY="${PYTHON:-python3}"

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }

pack() {
  local dir="$1"
  cd "$ROOT"
  source scripts/deps.sh
  cargo build --release -p orchestrator --bins
  cargo build --release -p orchestrator-stages --features torch --bins
  local bench
  bench="$(cargo bench -p orchestrator-stages --features torch --bench train --no-run --message-format=json 2>/dev/null \
    | "$PY" -c 'import sys, json
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "train":
        print(m["executable"])' | tail -n 1)"
  mkdir -p "$dir/bin" "$dir/bench" "$dir/stages/tests/py"
  for b in orchestrator orchestrator-stage orchestrator-stage-lite; do
    strip -o "$dir/bin/$b" "target/release/$b"
  done
  strip -o "$dir/bin/bench-train" "$bench"
  cp -r pipelines "$dir/"
  cp bench/gpu.sh bench/gpu_pytorch.py bench/gpu_summary.py bench/gpu_main.yaml "$dir/bench/"
  cp stages/tests/py/golden.py "$dir/stages/tests/py/"
  du -sh "$dir"
  echo "copy $dir to the GPU machine and run: $dir/bench/gpu.sh run"
}

run() {
  local cpu_check=0 out=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --cpu-check) cpu_check=1 ;;
      --out) out="$2"; shift ;;
      *) usage ;;
    esac
    shift
  done
  local bin="$ROOT/bin"
  [ -x "$bin/orchestrator" ] || bin="$ROOT/target/release"
  local bench="$bin/bench-train"
  if [ ! -x "$bench" ]; then
    bench="$(ls -t "$ROOT"/target/release/deps/train-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)"
  fi
  for b in "$bin/orchestrator" "$bin/orchestrator-stage" "$bench"; do
    [ -x "$b" ] || { echo "missing $b: run 'bench/gpu.sh pack DIR' on the build machine (or make build + cargo bench --no-run)" >&2; exit 3; }
  done
  out="${out:-$ROOT/bench/gpu-results/$(date +%Y%m%d-%H%M%S)}"
  mkdir -p "$out"
  local torch_lib
  torch_lib="$("$PY" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
  export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export ORCHESTRATOR_STAGE_BIN="$bin/orchestrator-stage"
  export NO_COLOR=1
  local gpus="--gpus 0" device=cuda
  # Sizes: the main job's data (identities x images), the throughput batches and steps.
  local ids=1000 per=40 epochs=4 batches="128 512" steps=20 losses=50 net=iresnet50 lb=128
  local main_extra=() small_extra=()
  if [ "$cpu_check" = 1 ]; then
    gpus="--gpus none"; device=cpu; ids=12; per=5; epochs=1; batches="4"; steps=1; losses=3
    net=iresnet-tiny; lb=4
    main_extra=(--set size=32 --set pairs=40 --set ijbc_subjects=3 --set network=iresnet-tiny --set batch_size=16)
    small_extra=(--set identities=12 --set images_per_identity=5 --set epochs=1 --set batch_size=16)
  fi
  {
    echo "date: $(date -Is)"
    echo "host: $(hostname)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "gpu: none"
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
    "$bin/orchestrator-stage" --version
    echo "bench binary: $bench"
  } | tee "$out/machine.txt"

  # GPU memory in use, sampled every 200 ms for the whole run.
  local smi_pid=""
  if [ "$device" = cuda ]; then
    nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -lms 200 > "$out/gpu_memory.csv" &
    smi_pid=$!
    trap '[ -n "$smi_pid" ] && kill "$smi_pid" 2>/dev/null || true' EXIT
  fi

  echo "== 1/4 main job at ${ids} identities x ${per} images, 112 px, iResNet-50 ($gpus)"
  ( cd "$ROOT" && "$bin/orchestrator" run bench/gpu_main.yaml $gpus --cache-dir "$out/cache" --message-format json \
      --set identities="$ids" --set images_per_identity="$per" --set epochs="$epochs" "${main_extra[@]}" \
      > "$out/main_job_events.jsonl" 2> "$out/main_job_stderr.txt" ) || echo "main job failed: see $out/main_job_stderr.txt"

  echo "== 2/4 training throughput (tch vs PyTorch eager)"
  : > "$out/throughput.jsonl"
  for b in $batches; do
    for prec in fp32 amp bf16; do
      BENCH_NET=$net BENCH_BATCH=$b BENCH_STEPS=$steps BENCH_DEVICE=$device BENCH_PRECISION=$prec BENCH_PYTHON=0 \
        "$bench" | tail -n 1 | sed 's/^{/{"side":"tch",/' >> "$out/throughput.jsonl" \
        || echo "{\"side\":\"tch\",\"batch\":$b,\"precision\":\"$prec\",\"error\":true}" >> "$out/throughput.jsonl"
      "$PY" "$HERE/gpu_pytorch.py" --net $net --batch "$b" --steps "$steps" --precision "$prec" --device "$device" \
        | tail -n 1 | sed 's/^{/{"side":"pytorch",/' >> "$out/throughput.jsonl" \
        || echo "{\"side\":\"pytorch\",\"batch\":$b,\"precision\":\"$prec\",\"error\":true}" >> "$out/throughput.jsonl"
    done
  done

  echo "== 3/4 eval-trainset p(x): CUDA vs CPU (default-size main job)"
  ( cd "$ROOT" && "$bin/orchestrator" run pipelines/diffprob_50.yaml $gpus --cache-dir "$out/cache_small" --message-format json \
      "${small_extra[@]}" > "$out/small_job_events.jsonl" 2> "$out/small_job_stderr.txt" ) || echo "small main job failed: see $out/small_job_stderr.txt"
  "$PY" "$HERE/gpu_summary.py" cpu-eval --root "$ROOT" --bin "$bin" --cache "$out/cache_small" --out "$out/pofx_cpu" \
    > "$out/pofx.json" || echo '{"error": "cpu eval failed"}' > "$out/pofx.json"

  echo "== 4/4 AMP: first $losses losses, tch vs PyTorch (same init, same batches)"
  "$PY" "$HERE/gpu_pytorch.py" --net $net --classes 1000 --save-init "$out/init.safetensors" > /dev/null
  "$PY" "$HERE/gpu_pytorch.py" --net $net --classes 1000 --dropout 0 --batch $lb --precision amp --device "$device" \
    --init "$out/init.safetensors" --losses $losses | tail -n 1 > "$out/losses_pytorch.json"
  BENCH_NET=$net BENCH_BATCH=$lb BENCH_DEVICE=$device BENCH_PRECISION=amp BENCH_DROPOUT=0 \
    BENCH_INIT="$out/init.safetensors" BENCH_LOSSES=$losses "$bench" | tail -n 1 > "$out/losses_tch.json"

  [ -n "$smi_pid" ] && kill "$smi_pid" 2>/dev/null || true
  "$PY" "$HERE/gpu_summary.py" summary --out "$out" | tee "$out/summary.md"
}

case "${1:-}" in
  pack) [ $# -eq 2 ] || usage; pack "$2" ;;
  run) shift; run "$@" ;;
  *) usage ;;
esac
