#!/usr/bin/env bash
# Create an isolated venv for the PyTorch peers (no system site-packages), install the CPU
# build of torch 2.13.0 (pip takes the local file) and then each peer library on its own, so
# one failure does not block the others. Writes <venv>/install_log.json: {package: "ok" | error line}.
set -u
VENV=${1:-/tmp/peers-venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "torch==2.13.0" "numpy<3" 2>&1 | tail -2
LOG="$VENV/install_log.json"
echo "{" > "$LOG.tmp"
first=1
for pkg in torchopt higher learn2learn betty-ml; do
  # the torch pin keeps pip from replacing the local CPU build with a CUDA one
  out=$("$VENV/bin/python" -m pip install "$pkg" "torch==2.13.0" 2>&1)
  if [ $? -eq 0 ]; then status="ok"; else
    # the most telling line: a compiler's fatal error, else pip's own ERROR line
    status=$( (printf '%s\n' "$out" | grep -m1 "fatal error"; printf '%s\n' "$out" | grep -m1 "^ERROR") \
             | head -1 | sed 's/^ *//; s/"/\\"/g'); fi
  [ $first -eq 1 ] || echo "," >> "$LOG.tmp"; first=0
  printf '  "%s": "%s"' "$pkg" "$status" >> "$LOG.tmp"
done
echo "}" >> "$LOG.tmp"
mv "$LOG.tmp" "$LOG"
cat "$LOG"
