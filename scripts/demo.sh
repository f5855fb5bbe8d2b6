#!/usr/bin/env bash
# The acmon demo: synthetic pump recordings -> int8 model -> replay a bearing fault through the
# device pipeline -> the alert arrives at an MQTT subscriber. Run it with `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
work=$(mktemp -d)
broker_pid=""
sub_pid=""
cleanup() {
  [[ -n "$sub_pid" ]] && kill "$sub_pid" 2>/dev/null || true
  [[ -n "$broker_pid" ]] && kill "$broker_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m[%s] %s\033[0m\n' "$1" "$2"; }

step 1/6 "Generating demo recordings of a pump (normal, and with faults) in data/demo/"
$PY -m training synth --demo --out data/demo

step 2/6 "Fitting a Gaussian ensemble to the normal recordings (members chosen on injected faults, threshold from the score tail) and exporting it as int8 TFLite to models/demo/"
$PY -m training fit --data data/demo/pump --out models/demo

step 3/6 "Inspecting the model: feature parameters and calibrated threshold travel inside the .tflite"
$PY -m firmware_tools inspect models/demo

port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
step 4/6 "Starting a local mosquitto broker on 127.0.0.1:$port"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
broker_pid=$!
for _ in $(seq 50); do
  mosquitto_pub -h 127.0.0.1 -p "$port" -t acmon/ping -n 2>/dev/null && break
  sleep 0.1
done
mosquitto_sub -h 127.0.0.1 -p "$port" -t 'acmon/+/+/events' -v > "$work/received.txt" &
sub_pid=$!
sleep 0.5

fault=$(ls data/demo/pump/test/anomaly_id_00_*.wav | head -1)
clean=$(ls data/demo/pump/test/normal_id_00_*.wav | head -1)
step 5/6 "Replaying $fault (a recording with a fault) through the device pipeline"
$PY -m device replay --config configs/demo.yaml --broker "127.0.0.1:$port" "$fault"

step 6/6 "Replaying $clean (a healthy recording): no alert expected"
$PY -m device replay --config configs/demo.yaml --broker "127.0.0.1:$port" "$clean"
sleep 1

printf '\n\033[1mWhat the MQTT subscriber received (mosquitto_sub -t "acmon/+/+/events"):\033[0m\n'
cat "$work/received.txt"
starts=$(grep -c '"state": *"start"' "$work/received.txt" || true)
from_clean=$(grep -c "$(basename "$clean")" "$work/received.txt" || true)
if [[ "$starts" -ge 1 && "$from_clean" -eq 0 ]]; then
  printf '\n\033[32mDemo OK: the fault raised %s alert(s) at the subscriber; the healthy recording raised none.\033[0m\n' "$starts"
  echo "Next: python -m device replay --help, configs/device.yaml for a real microphone, README.md for the rest."
else
  printf '\n\033[31mDemo FAILED: %s alert(s) from the fault, %s from the healthy recording.\033[0m\n' "$starts" "$from_clean" >&2
  exit 1
fi
