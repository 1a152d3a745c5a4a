#!/usr/bin/env bash
# GPU suite, run on the device machine from the repo root (results: reports/gpu/README.md):
#   bash yoco_eval/bench/suite.sh [tests] [kernels] [profile] [prefill] [throughput] [loglik] [trace] [peers] [record] [scan]
#     [phi4flash] [lmeval] [cold] [longest] [gemv] [loop] [table] ...
# Needs the wheels from ../shared/gpu/wheels.sh in .whl/. Everything it measures goes to $OUT (default /tmp/out).
# Every profile row now follows the steady-state protocol (cold call + warm-up at the length + 3 timed runs: >= 5 calls
# a row); record, memratio and fp8 are budgeted for it, the older steps' timeouts were set for one call a row.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
# installed once per machine (a warm machine keeps /tmp/site between calls)
[ -d /tmp/site/fla ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
echo "${YOCO_EVAL_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)}" | tee "$OUT/commit.txt"
steps=${*:-tests profile throughput loglik}
for s in $steps; do
  t0=$(date +%s)
  case $s in
    tests) timeout ${TESTS_TIMEOUT:-450} python3 -m pytest -q -s -m gpu tests/gpu -p no:cacheprovider ${K:+-k "$K"} 2>&1 | tee "$OUT/gpu_tests.log" ;;
    profile) timeout 400 python3 -m yoco_eval profile --models yoco-3b,transformer-3b \
               --lengths 32k,64k,128k,256k,512k,1m --gen 32 --chunk-size ${CHUNK:-16384} --out "$OUT/profile.json" ;;
    throughput) for b in 1 4; do timeout 300 python3 -m yoco_eval profile --models yoco-3b --lengths 512k --gen 1024 \
               --batch $b --chunk-size ${CHUNK:-16384} --out "$OUT/throughput_b$b.json"; done ;;
    loglik) timeout 200 python3 -c "import json, sys; from yoco_eval.profile import bench_loglikelihood as b; \
               json.dump(b(), open(sys.argv[1], 'w'), indent=1)" "$OUT/loglik_32k.json" ;;
    kernels) timeout 280 python3 -m pytest -q -s -m gpu tests/gpu -p no:cacheprovider -k "triton or yoco_3b or cuda_graph" \
               2>&1 | tee "$OUT/gpu_tests_kernels.log"
             timeout 200 python3 -m yoco_eval.bench.decode "$OUT/bench_decode.json" 2>&1 | tee "$OUT/bench_decode.log" ;;
    prefill) for c in ${CHUNKS:-16384 8192}; do timeout 200 python3 -m yoco_eval profile --models yoco-3b \
               --lengths ${LENGTHS:-32k,512k,1m} --gen 32 --chunk-size $c --out "$OUT/profile_yoco_c$c.json"; done ;;
    trace) timeout 300 python3 -c "from yoco_eval.profile import trace; trace(ctx=${CTX:-524288}, chunk=${CHUNK:-16384})" 2>&1 | tee "$OUT/trace.log" ;;
    ours) timeout 400 python3 -m yoco_eval profile --models yoco-3b --lengths 32k,64k,128k,256k,512k,1m --gen 32 \
               --chunk-size ${CHUNK:-16384} --out "$OUT/profile_yoco.json" && \
          timeout 200 python3 -m yoco_eval profile --models transformer-3b --lengths 32k,64k,128k,256k --gen 32 \
               --chunk-size ${CHUNK:-16384} --out "$OUT/profile_transformer.json" ;;
    final) timeout 150 python3 -m yoco_eval profile --models yoco-3b --lengths 32k,128k,512k,1m --gen 32 \
               --chunk-size ${CHUNK:-16384} --out "$OUT/profile_yoco_final.json"
           timeout 120 python3 -m yoco_eval profile --models yoco-3b --lengths 512k --gen 1024 --batch 1 \
               --chunk-size ${CHUNK:-16384} --out "$OUT/throughput_b1.json"
           timeout 200 python3 -m yoco_eval profile --models "" --peers fla --peer-lengths 128k,256k,512k,1m \
               --out "$OUT/peer_fla.json"
           timeout 90 python3 -m yoco_eval profile --models "" --peers hf --peer-lengths 128k,256k \
               --out "$OUT/peer_hf.json" ;;
    peers) timeout 500 python3 -m yoco_eval profile --models yoco-3b --lengths 128k,256k,512k,1m --gen 16 \
               --chunk-size ${CHUNK:-16384} --peers fla,hf --peer-lengths 128k,256k,512k,1m --out "$OUT/peers.json" ;;
    record) # the results table under the steady-state protocol (yoco_eval/bench/protocol.py; every row: cold call apart,
            # warm-up at its length, median of 3): our rows next to FLA's YOCO in one comparison (64K chunks; with FLA
            # as a peer, profile gives fla-core its full autotuning for both sides; FLA_AUTOTUNE=pinned gives both the
            # Hopper pins, minutes shorter), our Transformer at 256K in a second
            # (5 calls of ~37 s; at 512K it would not fit the 10-minute call), then the 1M memory row with 8K chunks.
            timeout 560 python3 -m yoco_eval profile --models yoco-3b --lengths ${LENGTHS:-256k,512k,1m} \
              --gen 32 --chunk-size ${CHUNK:-65536} --peers fla --peer-lengths ${PEER_LENGTHS:-512k,1m} \
              --fla-autotune ${FLA_AUTOTUNE:-full} --out "$OUT/record.json" 2>&1 \
              | tee "$OUT/record.log"
            timeout 300 python3 -m yoco_eval profile --models yoco-3b,transformer-3b --lengths 256k --gen 32 \
              --chunk-size ${CHUNK:-65536} --out "$OUT/record_transformer_256k.json" 2>&1 | tee -a "$OUT/record.log"
            timeout 120 python3 -m yoco_eval profile --models yoco-3b --lengths 1m --gen 32 --chunk-size 8192 \
              --out "$OUT/record_mem_c8192.json" 2>&1 | tee -a "$OUT/record.log" ;;
    swiglu) timeout 240 python3 -m yoco_eval.bench.swiglu_gemm "$OUT/bench_swiglu_gemm.json" 2>&1 \
              | tee "$OUT/bench_swiglu_gemm.log" ;;
    scan) timeout 300 python3 -m yoco_eval.bench.selective_scan "$OUT/bench_selective_scan.json" \
              --lengths ${SCAN_LENGTHS:-8192 65536} --configs ${SCAN_CONFIGS:-256:4:1 128:4:1 512:4:1 256:2:1 256:8:1 256:4:2} 2>&1 \
              | tee "$OUT/bench_selective_scan.log" ;;
    phi4flash) # Phi-4-mini-flash, real shape: early exit vs the full forward (64K, 256K), 1M, decode vs floor; then the
            # 1M memory row with 8K chunks (issue 22's budget: weights + K/V + 2 GB)
            timeout 400 python3 -m yoco_eval.bench.phi4flash --out "$OUT/phi4flash_prefill_decode_64k_1m.json" 2>&1 \
              | grep -v '^{' | tee "$OUT/phi4flash.log"
            timeout 170 python3 -m yoco_eval.bench.phi4flash --out "$OUT/phi4flash_1m_chunk8k.json" --lengths 1m \
              --full-lengths '' --chunk 8192 2>&1 | grep -v '^{' | tee -a "$OUT/phi4flash.log" ;;
    lmeval) # lm-eval requests/s, --model yoco against --model hf on SmolLM2-135M, bf16, same requests and answers;
            # SMOL=DIR: a folder with SmolLM2's config + tokenizer only, timed with seeded random weights
            timeout 400 python3 -m yoco_eval.bench.lm_eval_throughput --out "$OUT/lm_eval_throughput.json" \
              --batch-size ${BATCH:-16} ${SMOL:+--model-folder $SMOL --random-weights} --profile "$OUT/lm_eval_profile" \
              2>&1 | grep -v "it/s\]" | tee "$OUT/lm_eval_throughput.log" ;;
    cold) # the first needle cell on empty Triton/Inductor caches, then a second start on those caches
            timeout 200 python3 -m yoco_eval.bench.cold_start --out "$OUT/cold_start.json" 2>&1 | tee "$OUT/cold_start.log" ;;
    longest) # the longest prompts: 8M tokens with the fp8 cache, then in bf16 (one timing each: memory rows)
            for kv in fp8 auto; do timeout 200 python3 -m yoco_eval profile --models yoco-3b-1m --lengths 8m --gen 8 \
              --chunk-size 8192 --kv-dtype $kv --runs 1 --warmup 0 --out "$OUT/prompt_8m_$kv.json"; done ;;
    projections) timeout 60 python3 -m yoco_eval.bench.projections "$OUT/bench_projections.json" ;;
    gemv) timeout 200 python3 -m yoco_eval.bench.gemv "$OUT/bench_gemv.json" 2>&1 | tee "$OUT/bench_gemv.log" ;;
    loop) # the decode loop at 512K: Engine.generate against the synchronous loop and bare graph replays, bf16 and fp8
            for kv in auto fp8; do timeout 100 python3 -m yoco_eval.bench.decode_loop --kv-dtype $kv \
              --out "$OUT/decode_loop_512k_$kv.json" 2>&1 | tee "$OUT/decode_loop_512k_$kv.log"; done ;;
    table) # issue 20's whole table, its rows spread over the visible GPUs (SMOL=DIR: lm-eval with random weights)
            python3 -m yoco_eval.bench.table --out "$OUT/table" ${SMOL:+--smol $SMOL} ;;
    memratio) # the memory-ratio row: both models at 512K with the same (small) prefill chunks. Two one-model files:
            # only their peaks are compared, and the Transformer's 165 s prefill is timed once (protocol "none")
            timeout 120 python3 -m yoco_eval profile --models yoco-3b --lengths 512k --gen 32 \
              --chunk-size ${CHUNK:-8192} --out "$OUT/memratio_yoco_c${CHUNK:-8192}.json" 2>&1 | tee "$OUT/memratio.log"
            timeout 300 python3 -m yoco_eval profile --models transformer-3b --lengths 512k --gen 32 --runs 1 --warmup 0 \
              --chunk-size ${CHUNK:-8192} --out "$OUT/memratio_transformer_c${CHUNK:-8192}.json" 2>&1 \
              | tee -a "$OUT/memratio.log" ;;
    fp8) # the throughput row with the opt-in fp8 K/V cache, batch 8
            # (one call is ~80 s: the cold call is the warm-up, then 3 timed runs)
            timeout 560 python3 -m yoco_eval profile --models yoco-3b --lengths 512k --gen 1024 --batch 8 \
              --warmup 1 --max-warmup 1 --chunk-size 32768 --kv-dtype fp8 --out "$OUT/throughput_b8_fp8.json" 2>&1 | tee "$OUT/fp8.log" ;;
    needle) # the YOCO paper's grid, 1 trial, random-weight YOCO-3B; NPROC=2 shards it over two GPUs with torchrun;
            # SHARED=1 shares one haystack across depths (prefix reuse); NEEDLE_TAG names the run folder
            launch="python3"; [ "${NPROC:-1}" -gt 1 ] && launch="torchrun --standalone --nproc_per_node $NPROC"
            dir="$OUT/needle_${NPROC:-1}gpu${SHARED:+_shared}${NEEDLE_TAG:-}"
            timeout ${NEEDLE_TIMEOUT:-540} $launch -m yoco_eval.niah.cli --model yoco \
              --model-args pretrained=yoco-3b,device=cuda,dtype=bfloat16,max_length=1048600 \
              --lengths ${NEEDLE_LENGTHS:-128k:1M:128k} --depths ${NEEDLE_DEPTHS:-0:100:11} --trials 1 --max-new-tokens 16 \
              ${SHARED:+--shared-haystack} --no-progress --out "$dir" 2>&1 | tee "$dir.log" | tail -20
            python3 -m yoco_eval.niah.cli --show "$dir" 2>&1 | tail -22 ;;
    needlepair) # the 2-GPU row as a same-call pair: the grid on 1 GPU, then on 2 (torchrun), each starting from
            # empty Triton and Inductor caches, as a fresh machine does
            for n in 1 2; do
              ( export TRITON_CACHE_DIR=/tmp/cache_n$n/triton TORCHINDUCTOR_CACHE_DIR=/tmp/cache_n$n/inductor
                [ $n = 1 ] && export CUDA_VISIBLE_DEVICES=0
                OUT=$OUT NPROC=$n SHARED=1 NEEDLE_TAG=_fresh NEEDLE_TIMEOUT=${NEEDLE_TIMEOUT:-330} bash "$0" needle ) 2>&1 \
                | grep -Ev "^ *[0-9]+( +[0-9]+\.[0-9]+)+ *$|^length|depth.len"
            done ;;
  esac
  echo "== step $s took $(( $(date +%s) - t0 )) s"
done
