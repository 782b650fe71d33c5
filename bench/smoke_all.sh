#!/bin/bash
# Every experiment's smoke preset on one device: `bash bench/smoke_all.sh cuda [OUT_DIR]`, the check to run when a
# GPU is lent (CI runs the same presets on the CPU, through the tests). Data sets that no package ships are read from
# $KDGM_DATA_DIR. Prints one line per experiment (exit code, seconds) and the end of a failed run's log; exits 1 if
# any failed.
DEVICE=${1:-cpu}
OUT=${2:-$(mktemp -d)}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
failed=0
for name in $($PY -m kdgm.cli list | awk '/^[a-z]/ {print $1}'); do
  start=$(date +%s)
  $PY -m kdgm.cli run "$name" --preset smoke --device "$DEVICE" --out "$OUT/$name" > "$OUT/$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc $(( $(date +%s) - start ))s"
  if [ $rc -ne 0 ]; then tail -3 "$OUT/$name.log"; failed=1; fi
done
exit $failed
