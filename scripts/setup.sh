#!/usr/bin/env bash
# Prepare this checkout: Debian packages (installed when run as root, otherwise the exact
# command is printed), the Python virtual environment in .venv, and with --tflite-runtime the
# separate tflite-runtime 2.14 environment (.venv-tflite, numpy<2) the tests use to check the
# 32-bit Pi's runtime. Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(mosquitto mosquitto-clients libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins systemd openssl)
WITH_TFLITE=0
EXTRAS="device,train,dev"
for arg in "$@"; do
  case "$arg" in
    --tflite-runtime) WITH_TFLITE=1 ;;
    --device-only) EXTRAS="device" ;;  # a monitoring Pi: the daemon's dependencies, no TensorFlow
    *) echo "setup.sh: unknown option $arg (known: --tflite-runtime, --device-only)" >&2; exit 2 ;;
  esac
done

# A 32-bit Pi (armv7l): PyPI has no ai-edge-litert, numpy, cffi or cryptography wheels for it. Those come from
# Debian (the environment sees them) and the runtime is tflite-runtime 2.14, the last build for 32-bit ARM.
VENV_OPTIONS=()
ARCH_PIP=()
if [[ $(uname -m) == armv7l ]]; then
  APT_PACKAGES+=(python3-numpy python3-yaml python3-cffi python3-cryptography)
  VENV_OPTIONS=(--system-site-packages)
  ARCH_PIP=("tflite-runtime==2.14.0")
fi

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# -- Debian packages -------------------------------------------------------
missing=()
# Debian's own python3 cannot make virtual environments without python3-venv.
if ! command -v python3.11 >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
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

stamp=.venv/.acmon-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $EXTRAS"
if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
  say "Creating .venv and installing acmon with its ${EXTRAS//,/, } dependencies (first run: a few minutes)"
  [[ -x .venv/bin/python ]] || "$PYTHON" -m venv "${VENV_OPTIONS[@]}" .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[$EXTRAS]" "${ARCH_PIP[@]}"
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
