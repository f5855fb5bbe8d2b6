#!/usr/bin/env bash
# Prepare this checkout: Debian packages (installed when run as root, otherwise the exact
# command is printed), the Python virtual environment in .venv, and with --tflite-runtime the
# separate tflite-runtime 2.14 environment (.venv-tflite, numpy<2) the tests use to check the
# 32-bit Pi's runtime. Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# A development machine: the broker, PulseAudio (the tests' microphone), systemd-analyze, g++ (export-c's
# tests), shellcheck, chromium and chromium-driver (the commissioning page's browser test); alsa-utils is in
# both lists so that the device's packages are a subset of these.
APT_PACKAGES=(mosquitto mosquitto-clients libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins systemd openssl g++
  alsa-utils shellcheck chromium chromium-driver tzdata)
# A monitoring Pi: PortAudio, and alsa-utils for arecord -l and alsamixer (the microphone's gain). No
# broker and no PulseAudio: the daemon reads ALSA directly, and a broker it does not use should not listen.
DEVICE_APT_PACKAGES=(libportaudio2 alsa-utils tzdata)  # tzdata: device.timezone (zoneinfo)
WITH_TFLITE=0
EXTRAS="device,train,workbench,dev,embeddings"  # workbench: scikit-learn; embeddings: BirdNET's weights for training/embeddings.py's tests
for arg in "$@"; do
  case "$arg" in
    --tflite-runtime) WITH_TFLITE=1 ;;
    --device-only) EXTRAS="device" ;;  # a monitoring Pi: the daemon's dependencies, no TensorFlow
    *) echo "setup.sh: unknown option $arg (known: --tflite-runtime, --device-only)" >&2; exit 2 ;;
  esac
done
[[ $EXTRAS == device ]] && APT_PACKAGES=("${DEVICE_APT_PACKAGES[@]}")

# A 32-bit Pi (armv7l) has no ai-edge-litert wheel, and PyPI has no armv7l wheel of numpy or cffi
# (sounddevice's; pip would compile them, without the compilers a Pi lacks): the device venv sees Debian's
# (--system-site-packages) and runs tflite-runtime 2.14, whose armv7l wheels are built for CPython 3.11
# and numpy 1.x (Debian 12's). pydantic-core has armv7l wheels; the rest is pure Python (bundle signatures
# too: device/analysis/ed25519.py, no cryptography on the device).
ARM32=0
VENV_OPTIONS=()
PIP_EXTRA=()
if [[ $EXTRAS == device && $(uname -m) == armv7l ]]; then
  ARM32=1
  APT_PACKAGES+=(python3-venv python3-numpy python3-cffi python3-yaml)
  VENV_OPTIONS=(--system-site-packages)
  PIP_EXTRA=("tflite-runtime==2.14.0")
  PYTHON=${PYTHON:-/usr/bin/python3}  # Debian's: its dist-packages are the system site the venv sees
fi

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# -- Debian packages -------------------------------------------------------
missing=()
# Debian's own python3 cannot make virtual environments without python3-venv: ask the Python that
# will make the venv (Debian's python3.11 on a Pi is found first and lacks ensurepip without it).
venv_python=${PYTHON:-$(command -v python3.11 || command -v python3 || echo python3)}
if ! "$venv_python" -c 'import ensurepip, venv' 2>/dev/null; then
  APT_PACKAGES+=(python3-venv)
fi
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    say "Installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "Missing Debian packages: ${missing[*]}" >&2
    echo "Install them, then run this again:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

# -- Python ----------------------------------------------------------------
PYTHON=${PYTHON:-}
if [[ -z "$PYTHON" ]]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null; then PYTHON=$candidate; break; fi
  done
fi
if [[ -z "$PYTHON" ]]; then
  echo "No python3 found: install Python 3.11 (sudo apt-get install -y python3 python3-venv)" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] < (3, 14))'; then
  echo "$PYTHON is $("$PYTHON" -V 2>&1); acmon's training side needs Python 3.10 to 3.13 (3.11 recommended)" >&2
  exit 1
fi
if ((ARM32)) && ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "$PYTHON is $("$PYTHON" -V 2>&1); on a 32-bit Pi tflite-runtime 2.14 needs Python 3.11: use Raspberry Pi OS or Debian 12 (bookworm)" >&2
  exit 1
fi

stamp=.venv/.acmon-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $EXTRAS${PIP_EXTRA:+ ${PIP_EXTRA[*]} ${VENV_OPTIONS[*]}}"
if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
  say "Creating .venv and installing acmon with its ${EXTRAS//,/, } dependencies (first run: a few minutes)"
  [[ -x .venv/bin/python ]] || "$PYTHON" -m venv "${VENV_OPTIONS[@]}" .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[$EXTRAS]" "${PIP_EXTRA[@]}"
  echo "$want" > "$stamp"
fi
# Compiled on every run (only what changed, after a git pull too), while the checkout is writable: the
# service user cannot write __pycache__, so without this every start of the daemon compiles its modules.
.venv/bin/python -m compileall -q device training firmware_tools >/dev/null

if ((WITH_TFLITE)); then
  # The device CLI's own dependencies (no TensorFlow, no paho: scoring runs offline).
  TFLITE_PACKAGES=("tflite-runtime==2.14.0" "numpy<2" pyyaml "pydantic>=2.7,<3" "threadpoolctl>=3.5")
  if [[ ! -f .venv-tflite/.acmon-installed || "$(cat .venv-tflite/.acmon-installed)" != "${TFLITE_PACKAGES[*]}" ]]; then
    say "Creating .venv-tflite: tflite-runtime 2.14 with numpy<2, as on a 32-bit Raspberry Pi"
    [[ -x .venv-tflite/bin/python ]] || "$PYTHON" -m venv .venv-tflite
    .venv-tflite/bin/python -m pip install --quiet "${TFLITE_PACKAGES[@]}"
    echo "${TFLITE_PACKAGES[*]}" > .venv-tflite/.acmon-installed
  fi
fi
