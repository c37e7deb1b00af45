#!/usr/bin/env bash
# One call on a lent GPU machine (issues 5 and 10): training throughput measured with one run alone on the
# GPU, then longer runs of several recipes side by side until a common deadline, each packed into $OUT.
#
#   carry: data/prepared/all and .whl (Keras and two small dependencies, from ../shared/tools/device-wheels)
#   BUDGET=480 OUT=... bash scripts/device_long_run.sh
#
# Everything that comes back: <recipe>.npz (scripts/import_device_run.py reads them) and logs.tgz.
set -u
DATA=${DATA:-data/prepared/all}
BUDGET=${BUDGET:-480}          # seconds from start to the end of training, packing excluded
SOLO_EPOCHS=${SOLO_EPOCHS:-30} # epochs the throughput run trains alone before the others start
SOLO_MAX=${SOLO_MAX:-240}      # ... or this many seconds after the start, whichever comes first
FIRST=${FIRST:-plain-mse}
FIRST_EPOCHS=${FIRST_EPOCHS:-100000}
OTHER_EPOCHS=${OTHER_EPOCHS:-100000}
OTHERS=${OTHERS:-plain-classification-flat fusion-classification-flat plain-colorful-light}
START=$(date +%s)
END=$((START + BUDGET))
LOGS=/tmp/koala-logs
mkdir -p "$LOGS" "$OUT"
if ls .whl/*.whl >/dev/null 2>&1 && ! python3 -c "import keras" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$LOGS/gpu.txt"
(nvidia-smi dmon -s um -d 5 > "$LOGS/dmon.txt" 2>&1 &) 2>/dev/null

train() {  # recipe batch learning-rate memory-fraction [epochs]
    XLA_PYTHON_CLIENT_MEM_FRACTION=$4 python3 scripts/device_train.py --data "$DATA" --out "$OUT" --recipes "$1" \
        --batch-size "$2" --learning-rate "$3" --deadline "$END" --cosine --validate-every 5 --seconds 1e9 \
        --epochs "${5:-100000}" \
        > "$LOGS/$1.log" 2>&1
}
train "$FIRST" 256 7e-4 0.25 "${FIRST_EPOCHS:-100000}" &
pids=($!)
while :; do
    epochs=$(grep -c "^Epoch" "$LOGS/$FIRST.log" 2>/dev/null || true)
    [ "${epochs:-0}" -ge "$SOLO_EPOCHS" ] && break
    [ $(( $(date +%s) - START )) -ge "$SOLO_MAX" ] && break
    kill -0 "${pids[0]}" 2>/dev/null || break
    sleep 1
done
echo "solo phase ended $(( $(date +%s) - START )) s after the start ($(date +%s))" | tee "$LOGS/solo.txt"
for recipe in $OTHERS; do
    train "$recipe" 128 5e-4 0.2 "${OTHER_EPOCHS:-100000}" &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
pkill -f "nvidia-smi dmon" 2>/dev/null
grep -h "^SUMMARY\|jit_compile\|Error\|error" "$LOGS"/*.log
tar -czf "$OUT/logs.tgz" -C "$LOGS" .
ls -la "$OUT"
