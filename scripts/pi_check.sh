#!/usr/bin/env bash
# Proof on ARM: a Debian 12 arm64 root (a 64-bit Pi OS, ai-edge-litert) and an armhf one (a 32-bit Pi OS,
# tflite-runtime 2.14), emulated with qemu-user, built in parallel or restored from the cache; the device
# installer runs in each, then tests/arm runs inside them against reference values this x86_64 host computes
# in the same run: golden features, int8 inputs and outputs, clip scores, and the daemon delivering an alert to
# a mosquitto on the host's loopback. As root: `make pi-check` (CI runs it after `make test`).
#
# Environment:
#   ACMON_PI_CACHE    folder of cached roots (default /var/cache/acmon/pi-roots; set it empty for no cache)
#   ACMON_PI_ARCHES   roots to check (default "arm64 armhf")
#   ACMON_PI_MIRROR   Debian mirror (default http://deb.debian.org/debian)
#   ACMON_PI_RESULTS  folder for the measurements and logs (default build/pi-check)
#   ACMON_PI_HOST_PYTHON    the x86_64 Python with acmon's training side (default .venv/bin/python)
#   ACMON_PI_TFLITE_PYTHON  the x86_64 Python with tflite-runtime 2.14 (default .venv-tflite/bin/python)
#   ACMON_PI_KEEP=1   keep the work folder with its roots afterwards (its mounts are removed all the same)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

# The device installer, run as root from /opt/acmon inside each root (a copy of this checkout).
# The environment (cached): the device's packages and venv. Then, in each run, scripts/install.sh installs the
# bundle the host made and signed in this run (user, /etc/acmon, trusted keys, config, check-config as the user).
INSTALLER="scripts/setup.sh --device-only"

read -r -a ARCHES <<< "${ACMON_PI_ARCHES:-arm64 armhf}"
CACHE=${ACMON_PI_CACHE-/var/cache/acmon/pi-roots}
MIRROR=${ACMON_PI_MIRROR:-http://deb.debian.org/debian}
RESULTS=${ACMON_PI_RESULTS:-$REPO/build/pi-check}
HOST_PYTHON=${ACMON_PI_HOST_PYTHON:-$REPO/.venv/bin/python}
TFLITE_PYTHON=${ACMON_PI_TFLITE_PYTHON:-$REPO/.venv-tflite/bin/python}
SUITE=bookworm  # Raspberry Pi OS 12 is built on it
CACHE_FORMAT=1  # bump when the way a root is built changes
# What a Pi image brings, plus what the device needs from Debian. armhf: PyPI has no armv7l wheels of numpy,
# cffi (for sounddevice) or cryptography; Debian's are the ones a 32-bit Pi uses (numpy 1.24: tflite-runtime
# 2.14 needs numpy < 2). The installer adds whatever else it wants itself.
ROOT_PACKAGES=(python3 python3-venv python3-pip ca-certificates libportaudio2 alsa-utils tzdata mosquitto-clients)
declare -A ARCH_PACKAGES=([arm64]="" [armhf]="python3-numpy python3-yaml python3-cffi python3-cryptography")
declare -A MACHINE=([arm64]=aarch64 [armhf]=armv7l)
declare -A BINFMT=([arm64]=qemu-aarch64 [armhf]=qemu-arm)
# The emulated CPU: a Pi 4's core for arm64 (no dot-product instructions, so the runtime picks the kernels a Pi 4
# runs); for armhf an ARMv7 core (a Pi 2's), whose kernel name armv7l is what a 32-bit Pi OS reports.
declare -A PI_CPU=([arm64]=cortex-a72 [armhf]=cortex-a7)
TEST_PIP=("pytest>=8,<10")  # tests/arm's runner, added to the device's environment after the installer
HOST_TOOLS=(qemu-user-static binfmt-support mmdebstrap arch-test zstd procps mosquitto mosquitto-clients)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
fail() { echo "pi_check: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || fail "needs root (building roots, chroot and mounts): sudo make pi-check"
[[ $(uname -m) == x86_64 ]] || fail "the reference values are x86_64's; this machine is $(uname -m)"
[[ -x $HOST_PYTHON && -x $TFLITE_PYTHON ]] ||
  fail "no $HOST_PYTHON or $TFLITE_PYTHON: run scripts/setup.sh --tflite-runtime first (make pi-check does)"
for arch in "${ARCHES[@]}"; do
  [[ -n ${MACHINE[$arch]:-} ]] || fail "ACMON_PI_ARCHES: unknown architecture '$arch' (known: ${!MACHINE[*]})"
done

# -- host tools ------------------------------------------------------------
missing=()
for pkg in "${HOST_TOOLS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  say "Installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The kernel runs ARM binaries through qemu once binfmt_misc knows them (a container may not have it mounted).
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
for arch in "${ARCHES[@]}"; do
  entry=/proc/sys/fs/binfmt_misc/${BINFMT[$arch]}
  [[ -e $entry ]] || update-binfmts --enable "${BINFMT[$arch]}"
  head -1 "$entry" | grep -qx enabled || fail "$entry is disabled: update-binfmts --enable ${BINFMT[$arch]}"
done

# -- work folder, and its cleanup on any exit ------------------------------
mkdir -p /var/tmp
work=$(mktemp -d /var/tmp/acmon-pi-check.XXXXXX)
mkdir -p "$work/roots" "$work/logs" "$work/host" "$work/check"
exec 3>&1  # the jobs' progress lines go here while their output goes to their logs
started=$SECONDS
pids=()

kill_tree() {  # PID: the process and its descendants, children first (all started by this script)
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do kill_tree "$child"; done
  kill "$1" 2>/dev/null || true
}

stop_root_processes() {  # ROOT: anything still running chrooted in it (a daemon, a test) was started here
  local proc
  for proc in /proc/[0-9]*; do
    [[ $(readlink "$proc/root" 2>/dev/null) == "$1" ]] && kill -KILL "${proc#/proc/}" 2>/dev/null
  done
  return 0
}

mounts_under() {  # DIR: mount points below it, deepest first
  awk -v base="$1/" 'index($5, base) == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

unmount_under() {  # DIR: unmount everything below it; fails if anything stays mounted
  local mnt _
  for _ in 1 2 3; do
    for mnt in $(mounts_under "$1"); do umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true; done
    [[ -z $(mounts_under "$1") ]] && return 0
    sleep 1
  done
  return 1
}

cleanup() {
  local rc=$? pid root
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill_tree "$pid"; done
  for root in "$work"/roots/*; do [[ -d $root ]] && stop_root_processes "$root"; done
  if ! unmount_under "$work"; then
    echo "pi_check: still mounted, $work left in place: $(mounts_under "$work" | tr '\n' ' ')" >&2
    exit 1
  fi
  if [[ ${ACMON_PI_KEEP:-0} == 1 ]]; then
    echo "pi_check: roots and logs kept in $work"
  else
    rm -rf --one-file-system "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# -- one root --------------------------------------------------------------
in_root() {  # ARCH COMMAND...: in the root, from /opt/acmon, with a clean environment and the Pi's CPU
  local arch=$1 cpu=${PI_CPU[$1]}
  shift
  QEMU_CPU=$cpu chroot "$work/roots/$arch" /usr/bin/env -i -C /opt/acmon \
    HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    QEMU_CPU="$cpu" DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore PIP_DEFAULT_TIMEOUT=120 PIP_CERT=/etc/ssl/certs/ca-certificates.crt CI="${CI:-}" "$@"
}

pi_cpuinfo() {  # ARCH: the /proc/cpuinfo a Pi of that kind shows, one entry per CPU this machine has
  local i
  for ((i = 0; i < $(getconf _NPROCESSORS_CONF); i++)); do
    if [[ $1 == arm64 ]]; then  # a Pi 4 (Cortex-A72, part 0xd08) on a 64-bit kernel
      printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
      printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n'
    else  # a Pi 2 (Cortex-A7, part 0xc07) on a 32-bit kernel
      printf 'processor\t: %d\nmodel name\t: ARMv7 Processor rev 5 (v7l)\nBogoMIPS\t: 38.40\n' "$i"
      printf 'Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm\n'
      printf 'CPU implementer\t: 0x41\nCPU architecture: 7\nCPU variant\t: 0x0\nCPU part\t: 0xc07\nCPU revision\t: 5\n\n'
    fi
  done
  if [[ $1 == arm64 ]]; then
    printf 'Hardware\t: BCM2835\nRevision\t: c03111\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n'
  else
    printf 'Hardware\t: BCM2835\nRevision\t: a21041\nModel\t\t: Raspberry Pi 2 Model B Rev 1.1\n'
  fi
}

mount_root() {  # ARCH: /proc, /sys and /dev in the root, for the installer and the tests
  local arch=$1 root=$work/roots/$1
  mount -t proc proc "$root/proc"
  # qemu-user leaves /proc/cpuinfo the host's (x86) text; LiteRT's CPU detection (cpuinfo, for XNNPACK) then
  # crashes with /sys present (measured: a segfault in the Interpreter). The Pi's own text instead, so that
  # the runtime picks the kernels it picks on the Pi.
  pi_cpuinfo "$arch" > "$work/host/cpuinfo-$arch"
  mount --bind "$work/host/cpuinfo-$arch" "$root/proc/cpuinfo"
  mount --bind /sys "$root/sys"
  mount --bind /dev "$root/dev"
  mount --make-private "$root/dev"  # before anything is mounted below it: nothing may reach the host's /dev
  mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts"  # a pty of its own, for apt's log
  # The root reaches the network as the host does: the host's resolver and trusted certificates (Debian's
  # set plus any the host added, such as a proxy's CA).
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
}

binfmt_interpreter() {  # ARCH ROOT: without binfmt's F flag the kernel looks for qemu inside the root
  local entry=/proc/sys/fs/binfmt_misc/${BINFMT[$1]} interpreter
  grep -q '^flags:.*F' "$entry" && return 0
  interpreter=$(awk '$1 == "interpreter" { print $2 }' "$entry")
  install -D -m 755 "$(readlink -f "$interpreter")" "$2$interpreter"
}

keys() {  # ARCH: "BASE_KEY FULL_KEY": the root as built; then with the installer's and the tests' packages
  local arch=$1 base full
  base=$(printf '%s\n' "$CACHE_FORMAT" "$SUITE" "$arch" "${ROOT_PACKAGES[*]}" "${ARCH_PACKAGES[$arch]}" \
    | sha256sum | cut -c1-16)
  # The week is in the key so that the cached environment takes new releases of unpinned packages within a
  # week, as a fresh install would (the x86 side installs fresh every run).
  full=$( {
    printf '%s\n' "$base" "$INSTALLER" "${TEST_PIP[*]}" "$(date +%G-W%V)"
    cat pyproject.toml scripts/setup.sh
    [[ ! -f scripts/install.sh ]] || cat scripts/install.sh
  } | sha256sum | cut -c1-16)
  echo "$base $full"
}

save_cache() {  # ROOT FILE: tar the (unmounted) root; older layers of the same kind are removed
  local root=$1 file=$2
  [[ -n $CACHE ]] || return 0
  mkdir -p "$CACHE"
  tar -C "$root" --numeric-owner --one-file-system -I 'zstd -q -T2 -3' -cf "$file.part.$$" .
  find "$CACHE" -maxdepth 1 -name "$(basename "${file%-*}")-*.tar.zst" ! -name "$(basename "$file")" -delete
  mv "$file.part.$$" "$file"
}

sync_checkout() {  # ROOT: this checkout's files (tracked and new, not ignored) in ROOT/opt/acmon; .venv stays
  local dest=$1/opt/acmon
  mkdir -p "$dest"
  find "$dest" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
  git ls-files -z -co --exclude-standard | tar --null --ignore-failed-read -T - -cf - | tar -C "$dest" -xf -
}

step() {  # ARCH TEXT: a progress line on the terminal and in the log, with the time since the start
  local line
  line=$(printf '[%s %4ds] %s' "$1" $((SECONDS - started)) "$2")
  echo "$line" >&3
  echo "$line"
  echo "$2" > "$work/logs/$1.step"
}

prepare_root() {  # ARCH: the root with the device installed, from the cache or built
  local arch=$1 root=$work/roots/$1 base full t
  read -r base full <<< "$(keys "$arch")"
  local base_file=$CACHE/$arch-base-$base.tar.zst full_file=$CACHE/$arch-installed-$full.tar.zst
  t=$SECONDS
  mkdir -p "$root"
  if [[ -n $CACHE && -f $full_file ]]; then
    step "$arch" "restoring the installed root from $full_file"
    tar -C "$root" --numeric-owner -I 'zstd -q -d' -xpf "$full_file"
  elif [[ -n $CACHE && -f $base_file ]]; then
    step "$arch" "restoring the Debian root from $base_file"
    tar -C "$root" --numeric-owner -I 'zstd -q -d' -xpf "$base_file"
  else
    step "$arch" "building a Debian $SUITE $arch root (emulated package scripts: about 6 minutes)"
    # shellcheck disable=SC2206  # the package list is split on purpose
    local packages=("${ROOT_PACKAGES[@]}" ${ARCH_PACKAGES[$arch]})
    mmdebstrap --mode=root --variant=minbase --arch="$arch" --include="$(IFS=,; echo "${packages[*]}")" \
      --aptopt='Acquire::Retries "3"' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      "$SUITE" "$root" "$MIRROR"
    printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"  # packages start no services in a chroot
    chmod 755 "$root/usr/sbin/policy-rc.d"
    step "$arch" "root built in $((SECONDS - t)) s; caching it"
    save_cache "$root" "$base_file"
  fi
  echo "root $((SECONDS - t))" >> "$work/logs/$arch.times"
  binfmt_interpreter "$arch" "$root"
  sync_checkout "$root"
  mount_root "$arch"
  t=$SECONDS
  step "$arch" "running the installer: $INSTALLER"
  in_root "$arch" /bin/bash -c "$INSTALLER"
  in_root "$arch" .venv/bin/python -c 'import pytest' 2>/dev/null || in_root "$arch" .venv/bin/python -m pip install -q "${TEST_PIP[@]}"
  echo "install $((SECONDS - t))" >> "$work/logs/$arch.times"
  step "$arch" "installed in $((SECONDS - t)) s"
  unmount_under "$root"
  if [[ -n $CACHE && ! -f $full_file ]]; then
    step "$arch" "caching the installed root"
    # Without what only an install needs again (packages, package lists, pip's downloads): 220 MB less.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* "$root/root/.cache"
    save_cache "$root" "$full_file"
  fi
  step "$arch" "ready"
}

test_root() {  # ARCH PORT: tests/arm inside the root against the host's reference, the broker on PORT
  local arch=$1 root=$work/roots/$1 t=$SECONDS
  rm -rf "$root/opt/acmon-check"
  cp -r "$work/check" "$root/opt/acmon-check"
  mount_root "$arch"
  step "$arch" "installing the signed bundle: scripts/install.sh --bundle"
  in_root "$arch" scripts/install.sh --bundle /opt/acmon-check/model.acmon --trusted-keys /opt/acmon-check/site.pub \
    --config /opt/acmon-check/acmon.yaml --no-mic-check --no-start || { unmount_under "$root"; return 1; }
  step "$arch" "running tests/arm on ${MACHINE[$arch]} (emulated ${PI_CPU[$arch]})"
  local rc=0
  in_root "$arch" ACMON_ARM_CHECK_DIR=/opt/acmon-check ACMON_ARM_BROKER="127.0.0.1:$2" \
    ACMON_ARM_EXPECT_MACHINE="${MACHINE[$arch]}" .venv/bin/python -m pytest -p no:cacheprovider -v tests/arm || rc=$?
  cp "$root"/opt/acmon-check/results-*.json "$work/logs/" 2>/dev/null || true
  unmount_under "$root"
  echo "tests $((SECONDS - t))" >> "$work/logs/$arch.times"
  step "$arch" "tests finished in $((SECONDS - t)) s (exit $rc)"
  return "$rc"
}

any_alive() {  # PID...: true while one of them runs
  local pid
  for pid; do kill -0 "$pid" 2>/dev/null && return 0; done
  return 1
}

run_jobs() {  # FUNCTION ARGS...: FUNCTION ARCH ARGS... for every architecture in parallel; fails if any failed
  local fn=$1 arch pid status=0
  shift
  local -A job=()
  for arch in "${ARCHES[@]}"; do
    "$fn" "$arch" "$@" > "$work/logs/$arch-$fn.log" 2>&1 &
    job[$arch]=$!
    pids+=("$!")
  done
  # A line a minute while the emulated work runs, so that a CI log shows where it is.
  while any_alive "${job[@]}"; do
    sleep 5
    if (((SECONDS - started) % 60 < 5)); then
      for arch in "${ARCHES[@]}"; do
        printf '[%s %4ds] ... %s\n' "$arch" $((SECONDS - started)) "$(cat "$work/logs/$arch.step" 2>/dev/null)"
      done
    fi
  done
  for arch in "${ARCHES[@]}"; do
    if ! wait "${job[$arch]}"; then
      status=1
      echo "pi_check: $fn $arch failed; the end of $work/logs/$arch-$fn.log:" >&2
      tail -n 60 "$work/logs/$arch-$fn.log" >&2
    fi
  done
  return "$status"
}

# -- the check -------------------------------------------------------------
say "Checking the device on ${ARCHES[*]} (cache: ${CACHE:-none}; work: $work)"
run_jobs prepare_root &
prepare_pid=$!
pids+=("$prepare_pid")

# Meanwhile, the host: a small int8 model trained as the demo trains one, and the reference values with both
# runtimes (ai-edge-litert, as a 64-bit Pi runs it, and tflite-runtime 2.14, as a 32-bit one does).
say "Training the demo model on the host and computing the x86_64 reference values"
t=$SECONDS
{
  "$HOST_PYTHON" -m training synth --demo --out "$work/host/data" &&
    "$HOST_PYTHON" -m training fit --data "$work/host/data/pump" --out "$work/host/model" --no-track &&
    "$HOST_PYTHON" -m tests.arm.reference --model "$work/host/model" --clips "$work/host/data/pump/test" \
      --out "$work/check" &&
    "$TFLITE_PYTHON" -m tests.arm.reference --add-runtime --out "$work/check" &&
    # What a technician ships: the model as a signed bundle, and a config for the installer.
    "$HOST_PYTHON" -m firmware_tools keygen --out "$work/check/site" &&
    "$HOST_PYTHON" -m firmware_tools bundle "$work/host/model" -o "$work/check/model.acmon" &&
    "$HOST_PYTHON" -m firmware_tools sign "$work/check/model.acmon" --key "$work/check/site.key" &&
    rm "$work/check/site.key" &&
    printf 'device:\n  id: pi-check\n  site: ci\nmodel:\n  path: /nowhere.tflite\n  trusted_keys: null\nmqtt:\n  enabled: false\n' \
      > "$work/check/acmon.yaml"
} > "$work/logs/host.log" 2>&1 || { tail -n 40 "$work/logs/host.log"; fail "the host's reference failed"; }
echo "host-reference $((SECONDS - t))" > "$work/logs/host.times"
say "Host reference ready in $((SECONDS - t)) s; waiting for the roots"

wait "$prepare_pid" || fail "preparing the roots failed (logs above)"
echo "prepare-wall $((SECONDS - started))" >> "$work/logs/host.times"

port=$("$HOST_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" > "$work/host/mosquitto.conf"
mosquitto -c "$work/host/mosquitto.conf" > "$work/logs/mosquitto.log" 2>&1 &
pids+=("$!")
for _ in $(seq 50); do
  mosquitto_pub -h 127.0.0.1 -p "$port" -t acmon-pi-check/ping -n 2>/dev/null && break
  sleep 0.1
done
# The host's own witness of what reached its broker, beside what the tests' subscribers saw.
mosquitto_sub -h 127.0.0.1 -p "$port" -t 'acmon-pi-check/+/+/events' -v > "$work/host/received.txt" &
pids+=("$!")
sleep 0.5

say "Running tests/arm in the roots (broker on 127.0.0.1:$port)"
t=$SECONDS
tests_ok=1
run_jobs test_root "$port" || tests_ok=0
echo "tests-wall $((SECONDS - t))" >> "$work/logs/host.times"
sleep 1

received_ok=1
for arch in "${ARCHES[@]}"; do
  if ! grep "^acmon-pi-check/arm-check/pump-${MACHINE[$arch]}/events " "$work/host/received.txt" \
    | grep -q '"state": *"start"'; then
    echo "pi_check: the host's mosquitto_sub received no start event from ${MACHINE[$arch]}" >&2
    received_ok=0
  fi
done

# -- what was measured -----------------------------------------------------
mkdir -p "$RESULTS"
rm -f "$RESULTS"/*.json "$RESULTS"/*.log "$RESULTS"/*.times
cp "$work"/logs/*.log "$work"/logs/*.times "$RESULTS"/ 2>/dev/null || true
cp "$work"/logs/results-*.json "$RESULTS"/ 2>/dev/null || true
cp "$work/host/received.txt" "$RESULTS/received.txt"
echo "total-wall $((SECONDS - started))" >> "$RESULTS/host.times"
"$HOST_PYTHON" - "$RESULTS" <<'EOF'
import json
import sys
from pathlib import Path

results = Path(sys.argv[1])
for path in sorted(results.glob("results-*.json")):
    r = json.loads(path.read_text())
    golden, inputs = r.get("golden_max_abs_difference", {}), r.get("int8_inputs", {})
    outputs, scores = r.get("int8_outputs", {}), r.get("scores", {})
    print(f"{r['machine']}: {r.get('runtime')}, {r.get('platform')}")
    print(f"  golden features, max |ARM - x86|: log-mel {golden.get('logmel')} dB, patch {golden.get('patch')}")
    print(f"  int8 inputs: max {inputs.get('max_steps')} step(s), share different {inputs.get('share_different')}")
    print(f"  int8 outputs against the same runtime on x86: max {outputs.get('same_runtime_max_steps')} step(s), "
          f"share equal {outputs.get('same_runtime_share_equal')}; against the other runtime: max "
          f"{outputs.get('other_runtime_max_steps')}, histogram {outputs.get('other_runtime_steps_histogram')}")
    print(f"  clip scores, max relative difference: same runtime {scores.get('same_runtime_max_relative_difference')}, "
          f"other runtime {scores.get('other_runtime_max_relative_difference')} ({scores.get('clips')} clips, "
          f"{scores.get('anomalies')} anomalies, {scores.get('emulated_seconds')} s emulated)")
    print(f"  daemon: {r.get('daemon')}")
for path in sorted(results.glob("*.times")):
    print(f"{path.stem}: " + ", ".join(f"{k} {v} s" for k, v in (line.split() for line in path.read_text().splitlines())))
EOF
say "Measurements and logs in $RESULTS"
((tests_ok && received_ok)) || fail "the ARM check failed"
say "ARM check passed on ${ARCHES[*]} in $((SECONDS - started)) s"
