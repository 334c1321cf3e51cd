#!/usr/bin/env bash
# The submitter's whole path on one H200 lease (bench/e2e_submission.py, detached), over several calls
# of at most 10 minutes each. Run from the repository root with the carried folder .dev/ holding the
# wheels (.dev/whl), a copy of the shared folder's kits19/, tools/, models/ (.dev/shared) and a
# checkout of mlcommons/inference (.dev/inference: its submission checker and TEST01 scripts).
#
#   bench/h200_submission.sh start WORK          call 1: starts the chain, then in the foreground
#                                                measures the Offline throughput that sizes the first
#                                                full run (bench_multigpu.py, 20 s LoadGen runs) and
#                                                runs the GPU tests until the data set-up is done
#   bench/h200_submission.sh wait WORK SECONDS   later calls: polls; when the chain is done, copies
#                                                its results (and the official TEST01 cross-check) to $OUT
set -u
cmd=${1:?start|wait}
W=${2:?work folder}
OUT=${OUT:-$W/collected}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .dev/whl/*.whl >/dev/null 2>&1 || { echo "wheels did not install"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1

collect() {
    cp "$W"/chain.log "$W"/out/*.txt "$W"/out/*.json "$W"/out/*.log "$OUT"/ 2>/dev/null
    tar -czf "$OUT/logs.tar.gz" -C "$W" out 2>/dev/null
}

case $cmd in
start)
    mkdir -p "$W/out"
    # niced: during the set-up the foreground measurement must not lose the CPU to the phantom tool
    setsid nohup nice -n 5 python3 bench/e2e_submission.py --shared .dev/shared --work "$W" --out "$W/out" \
        --checker "$PWD/.dev/inference" --backend torch --precision fp8 --batch 8 --streams 2 --jobs 14 \
        --gate "$W/gate" --expected-qps "$W/qps" --system-name h200_torch_fp8_phantom \
        >"$W/chain.log" 2>&1 </dev/null &
    # the same engines as the chain's runs (fp8, batch 8, two per GPU) on a random model of the
    # phantom model's widths over the 43 real shapes: speed does not depend on the weights
    timeout 170 python3 bench/bench_multigpu.py --precision fp8 --gpus 1 --batch 8 --per-device 2 \
        --widths half --min-duration 20 >"$W/out/measure_qps.log" 2>&1
    grep '^# done: harness, 1 device(s) x 2 engines' "$W/out/measure_qps.log" | awk -F'|' '{print $3+0}' \
        >"$W/qps.tmp" && [ -s "$W/qps.tmp" ] && mv "$W/qps.tmp" "$W/qps"
    echo "measured Offline samples/s (2 engines): $(cat "$W/qps" 2>/dev/null || echo none)"
    nice -n 19 python3 -m pytest -q -p no:cacheprovider tests/test_plugins_gpu.py tests/test_gluon_conv.py \
        tests/test_torch_backend.py tests/test_multigpu.py >"$W/out/gpu_tests.log" 2>&1 &
    tests=$!
    while [ ! -e "$W/gate.ready" ] && kill -0 $tests 2>/dev/null; do sleep 2; done
    if kill -0 $tests 2>/dev/null; then
        kill $tests; echo "(cut when the data set-up was done: the timed runs need the GPU alone)" \
            >>"$W/out/gpu_tests.log"
    fi
    touch "$W/gate"
    tail -3 "$W/out/gpu_tests.log"
    collect
    tail -5 "$W/chain.log"
    ;;
wait)
    end=$((SECONDS + ${3:-560}))
    while [ $SECONDS -lt $end ] && ! grep -q '\] done$' "$W/chain.log"; do sleep 5; done
    if grep -q '\] done$' "$W/chain.log"; then
        # the official TEST01 verification over the same runs, beside ours, as a cross-check: it reads
        # RESULTS/accuracy/mlperf_log_accuracy.json (the full log) and RESULTS/performance/run_1/
        logs="$W/ws/build/logs"
        acc=$(ls -d "$logs"/*_Offline_AccuracyOnly 2>/dev/null | tail -1)
        perf=$(ls -d "$logs"/*_Offline_PerformanceOnly 2>/dev/null | tail -1)
        t01=$(ls -d "$logs"/*_Offline_PerformanceOnly_TEST01 2>/dev/null | tail -1)
        if [ -n "$acc" ] && [ -n "$perf" ] && [ -n "$t01" ]; then
            mkdir -p "$W/xcheck/results/performance"
            ln -sfn "$acc" "$W/xcheck/results/accuracy"
            ln -sfn "$perf" "$W/xcheck/results/performance/run_1"
            (cd .dev/inference/compliance/TEST01 && timeout 150 python3 run_verification.py \
                -r "$W/xcheck/results" -c "$t01" -o "$W/xcheck/out" >"$W/out/official_test01.log" 2>&1)
            cat "$W"/xcheck/out/TEST01/verify_*.txt >>"$W/out/official_test01.log" 2>/dev/null
        fi
        tar -czf "$OUT/submission.tar.gz" -C "$W" submission 2>/dev/null
    fi
    collect
    tail -25 "$W/chain.log"
    ;;
esac
