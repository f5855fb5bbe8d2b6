#!/usr/bin/env bash
# Install the acmon device daemon on this machine (a Raspberry Pi) from this checkout, in one command:
#
#   sudo scripts/install.sh [--bundle FILE.acmon] [--config FILE.yaml] [--trusted-keys FILE_OR_DIR]
#                           [--mic-check | --no-mic-check] [--no-start]
#   sudo scripts/install.sh --uninstall [--purge]
#
# Steps, each skipped (and said so) when already done, so a second run changes nothing:
#   code       /opt/acmon: this checkout if it is /opt/acmon, else a copy of the device's files
#   venv       scripts/setup.sh --device-only there: Debian packages, /opt/acmon/.venv (no TensorFlow)
#   bundle     --bundle is verified (hashes; the signature with trusted keys) before anything uses it
#   user       system user acmon: no login, home /var/lib/acmon, in group audio
#   dirs       /etc/acmon (root:acmon 0750), the state directory /var/lib/acmon (acmon 0700)
#   keys       --trusted-keys into /etc/acmon/trusted-keys/; they stay in force for later bundles
#   model      the bundle as /etc/acmon/model.acmon (the one it replaces kept as model.acmon.prev)
#   config     /etc/acmon/acmon.yaml (root:acmon 0640) from --config, else the bundle's config.yaml, else
#              configs/device.yaml, with model.path (and model.trusted_keys) pointing at what was installed.
#              An existing acmon.yaml is NEVER overwritten: the new one is written beside it, acmon.yaml.new.
#   mic        `python -m firmware_tools mic-check`: devices, level, clipping (a problem is a warning;
#              with --mic-check it stops the install; --no-mic-check skips it)
#   check      `python -m device check-config` as the acmon user: a config the daemon would refuse stops here
#   unit       acmon-device.service enabled and started (restarted when something changed); without a
#              running systemd (a chroot, a container) enabled by symlink and not started
#
# --uninstall stops and removes the unit and /opt/acmon/.venv (and the copied code, never a checkout);
# /etc/acmon and /var/lib/acmon stay unless --purge, which removes them and the acmon user too.
#
# Test hook: ACMON_ROOT=/some/dir puts /opt/acmon, /etc/acmon, /etc/systemd/system and /var/lib/acmon under
# that folder, and skips what cannot work there: the user, owners (chown), systemctl, and running as acmon
# (commands run as the caller). Paths written into the config carry the prefix, so check-config finds them.
set -euo pipefail
umask 022 # the code and venv must be readable by the service's user whatever root's umask is

if [[ -t 1 ]]; then
  say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
else
  say() { printf '==> %s\n' "$*"; }
fi
die() {
  printf 'install.sh: error: %s\n' "$*" >&2
  exit 1
}
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
indent() { sed 's/^/    /'; }

usage() {
  sed -n '4,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# -- options ----------------------------------------------------------------
ARGS=("$@")
BUNDLE="" CONFIG="" KEYS="" MIC=warn UNINSTALL=0 PURGE=0 START=1
while (($#)); do
  opt=$1
  value=""
  case $opt in
    --bundle=* | --config=* | --trusted-keys=*) value=${opt#*=} opt=${opt%%=*} ;;
    --bundle | --config | --trusted-keys)
      (($# >= 2)) || die "$opt needs a value (see --help)"
      value=$2
      shift
      ;;
  esac
  case $opt in
    --bundle) BUNDLE=$value ;;
    --config) CONFIG=$value ;;
    --trusted-keys) KEYS=$value ;;
    --mic-check) MIC=required ;;
    --no-mic-check) MIC=off ;;
    --no-start) START=0 ;;
    --uninstall) UNINSTALL=1 ;;
    --purge) PURGE=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) die "unknown option $opt (known: --bundle, --config, --trusted-keys, --mic-check, --no-mic-check, --no-start, --uninstall, --purge)" ;;
  esac
  shift
done
((PURGE && !UNINSTALL)) && die "--purge goes with --uninstall"
if ((UNINSTALL)) && [[ -n $BUNDLE$CONFIG$KEYS ]]; then
  die "--uninstall takes no --bundle, --config or --trusted-keys"
fi

# Files given are checked before anything changes, and made absolute (the steps run in other folders).
if [[ -n $BUNDLE ]]; then
  [[ -f $BUNDLE ]] || die "--bundle $BUNDLE: no such file; give the path of a .acmon bundle (python -m firmware_tools bundle)"
  [[ -r $BUNDLE ]] || die "--bundle $BUNDLE: not readable"
  BUNDLE=$(realpath "$BUNDLE")
fi
if [[ -n $CONFIG ]]; then
  [[ -f $CONFIG ]] || die "--config $CONFIG: no such file; give the path of a YAML config (see configs/device.yaml)"
  (($(stat -c %s "$CONFIG") <= 1048576)) || die "--config $CONFIG: larger than 1 MiB; a config is a few KiB: check the path"
  CONFIG=$(realpath "$CONFIG")
fi
if [[ -n $KEYS ]]; then
  if [[ -d $KEYS ]]; then
    compgen -G "$KEYS/*.pub" >/dev/null || die "--trusted-keys $KEYS: no .pub files in this folder"
  elif [[ -f $KEYS ]]; then
    [[ $KEYS == *.pub ]] || die "--trusted-keys $KEYS: give a public key (NAME.pub from python -m firmware_tools keygen), never the private .key"
  else
    die "--trusted-keys $KEYS: no such file or folder"
  fi
  KEYS=$(realpath "$KEYS")
fi

# -- where things go ---------------------------------------------------------
ROOT=${ACMON_ROOT:-}
if [[ -n $ROOT ]]; then
  [[ $ROOT == /* && -d $ROOT ]] || die "ACMON_ROOT=$ROOT: give an existing absolute folder (a test hook)"
  ROOT=$(realpath "$ROOT")
  [[ $ROOT != / ]] || ROOT=""
fi
if [[ -z $ROOT && $(id -u) -ne 0 ]]; then
  die "run as root: sudo $0 ${ARGS[*]}"
fi
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
OPT=$ROOT/opt/acmon
ETC=$ROOT/etc/acmon
UNIT_DIR=$ROOT/etc/systemd/system
STATE=$ROOT/var/lib/acmon
SERVICE=acmon-device
UNIT=$SERVICE.service
ACCOUNT=acmon
CONF=$ETC/acmon.yaml
MODEL=$ETC/model.acmon
KEYS_DIR=$ETC/trusted-keys
VENV_PY=$OPT/.venv/bin/python
COPY_MARK=$OPT/.acmon-copy # in a copy made here: --uninstall may remove the folder (never a checkout)
SYSTEMD=0
[[ -z $ROOT && -d /run/systemd/system ]] && SYSTEMD=1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# -- steps and their report ---------------------------------------------------
STEP_NAMES=() STEP_TEXTS=()
CHANGED=0 # steps that changed something
RESTART=0 # something the running daemon uses changed
# step NAME CHANGED(0/1) TEXT: record a step's outcome and say it.
step() {
  STEP_NAMES+=("$1")
  STEP_TEXTS+=("$3")
  (($2)) && CHANGED=$((CHANGED + 1))
  printf '  %-7s %s\n' "$1" "$3"
}

touched=0 # set by the helpers below when they change something
# perms PATH MODE OWNER: the mode (e.g. 640) and owner (user:group; not under ACMON_ROOT) it must have.
perms() {
  if [[ $(stat -c %a "$1") != "$2" ]]; then
    chmod "$2" "$1"
    touched=1
  fi
  if [[ -z $ROOT && $(stat -c %U:%G "$1") != "$3" ]]; then
    chown "$3" "$1"
    touched=1
  fi
}
# make_dir PATH MODE OWNER
make_dir() {
  if [[ ! -d $1 ]]; then
    mkdir -p "$1"
    touched=1
  fi
  perms "$@"
}
# put_file SRC DEST MODE OWNER: DEST gets SRC's content (replaced atomically when it differs), mode and owner.
put_file() {
  if ! cmp -s "$1" "$2"; then
    install -m "$3" "$1" "$2.tmp.$$"
    [[ -n $ROOT ]] || chown "$4" "$2.tmp.$$"
    mv -f "$2.tmp.$$" "$2"
    touched=1
  fi
  perms "$2" "$3" "$4"
}
# as_service CMD...: run as the daemon's user and groups, in /opt/acmon, with its state directory (as the
# unit runs it), so a file acmon cannot read fails here and not at the first start. setpriv, not su or
# runuser: no PAM session, which a chroot may not have.
as_service() {
  if [[ -n $ROOT ]]; then
    (cd "$OPT" && env STATE_DIRECTORY="$STATE" "$@")
  else
    (cd "$OPT" && setpriv --reuid="$ACCOUNT" --regid="$ACCOUNT" --init-groups \
      env HOME="$STATE" STATE_DIRECTORY="$STATE" "$@")
  fi
}
summary() {
  echo
  say "Summary${ROOT:+ (test root ACMON_ROOT=$ROOT)}"
  local i
  for i in "${!STEP_NAMES[@]}"; do
    printf '  %-7s %s\n' "${STEP_NAMES[$i]}" "${STEP_TEXTS[$i]}"
  done
  if ((CHANGED)); then
    echo "$CHANGED step(s) changed something."
  else
    echo "Nothing changed: everything was already as asked."
  fi
}

# -- uninstall ----------------------------------------------------------------
if ((UNINSTALL)); then
  say "Uninstalling acmon${ROOT:+ under $ROOT}"
  if ((SYSTEMD)) && [[ -e $UNIT_DIR/$UNIT ]]; then
    systemctl disable --now --quiet "$SERVICE" || warn "systemctl disable --now $SERVICE failed; removing it anyway"
    step unit 1 "stopped and disabled $SERVICE"
  fi
  links=()
  [[ -d $UNIT_DIR ]] && mapfile -t links < <(find "$UNIT_DIR" -name "$UNIT" -type l)
  if ((${#links[@]})) || [[ -e $UNIT_DIR/$UNIT ]]; then
    rm -f "${links[@]}" "$UNIT_DIR/$UNIT"
    for link in "${links[@]}"; do rmdir --ignore-fail-on-non-empty "$(dirname "$link")"; done
    ((SYSTEMD)) && systemctl daemon-reload
    step unit 1 "removed $UNIT_DIR/$UNIT"
  else
    step unit 0 "not installed"
  fi
  if [[ -f $COPY_MARK ]]; then
    rm -rf "$OPT"
    step code 1 "removed $OPT (the copy install.sh made) with its venv"
  elif [[ -d $OPT/.venv ]]; then
    rm -rf "$OPT/.venv"
    step venv 1 "removed $OPT/.venv; kept the checkout $OPT"
  else
    step venv 0 "no $OPT/.venv"
  fi
  if ((PURGE)); then
    gone=0
    for dir in "$ETC" "$STATE"; do
      if [[ -e $dir ]]; then
        rm -rf "$dir"
        gone=1
      fi
    done
    step files "$gone" "$( ((gone)) && echo "removed" || echo "no") $ETC and $STATE"
    if [[ -n $ROOT ]]; then
      step user 0 "skipped (test root)"
    elif id -u "$ACCOUNT" >/dev/null 2>&1; then
      userdel "$ACCOUNT"
      getent group "$ACCOUNT" >/dev/null && groupdel "$ACCOUNT"
      step user 1 "removed the user $ACCOUNT"
    else
      step user 0 "no user $ACCOUNT"
    fi
  else
    step files 0 "kept $ETC (config, model, keys) and $STATE (calibration, spool, evidence): --purge removes them"
  fi
  summary
  exit 0
fi

say "Installing acmon from $SRC${ROOT:+ under the test root $ROOT}"

# -- code ------------------------------------------------------------------------
# The device's side only: no training/, tests/ or data. Files are compared, so an unchanged copy is untouched.
CODE=(device firmware_tools configs systemd scripts docs pyproject.toml README.md)
if [[ $SRC == "$(realpath -m "$OPT")" ]]; then
  step code 0 "in place: $OPT is this checkout"
else
  if [[ -d $OPT && ! -f $COPY_MARK ]] && [[ -n $(ls -A "$OPT") ]]; then
    die "$OPT exists and is not a copy made by install.sh (a checkout?): run its own scripts/install.sh, or move it away"
  fi
  present=()
  for path in "${CODE[@]}"; do [[ -e $SRC/$path ]] && present+=("$path"); done
  declare -A wanted=()
  updated=0 removed=0
  mkdir -p "$OPT"
  while IFS= read -r -d '' rel; do
    rel=${rel#./}
    wanted[$rel]=1
    mode=644
    [[ -x $SRC/$rel ]] && mode=755
    if ! cmp -s "$SRC/$rel" "$OPT/$rel"; then
      install -D -m "$mode" "$SRC/$rel" "$OPT/$rel"
      updated=$((updated + 1))
    elif [[ $(stat -c %a "$OPT/$rel") != "$mode" ]]; then
      chmod "$mode" "$OPT/$rel"
      updated=$((updated + 1))
    fi
  done < <(cd "$SRC" && find "${present[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0)
  # Files the checkout no longer has (a module removed or renamed) leave the copy too.
  stale=()
  for path in "${CODE[@]}"; do [[ -e $OPT/$path ]] && stale+=("$path"); done
  while IFS= read -r -d '' rel; do
    if [[ -z ${wanted[$rel]:-} ]]; then
      rm -f "$OPT/$rel"
      removed=$((removed + 1))
    fi
  done < <(cd "$OPT" && find "${stale[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0)
  [[ -f $COPY_MARK ]] || echo "copied from $SRC by scripts/install.sh; --uninstall removes this folder" >"$COPY_MARK"
  if ((updated + removed)); then
    step code 1 "$OPT: $updated file(s) copied, $removed removed (from $SRC)"
    RESTART=1
  else
    step code 0 "unchanged ($OPT, ${#wanted[@]} files)"
  fi
fi

# -- venv --------------------------------------------------------------------------
stamp=$OPT/.venv/.acmon-installed
before=$(cat "$stamp" 2>/dev/null || true)
# A venv runs its base interpreter: it must be one the service user can run (Debian's), not a Python under
# /root (pyenv) that happens to be first on root's PATH.
if [[ -z ${PYTHON:-} ]]; then
  for candidate in /usr/bin/python3.11 /usr/bin/python3; do
    if [[ -x $candidate ]]; then
      export PYTHON=$candidate
      break
    fi
  done
fi
"$OPT/scripts/setup.sh" --device-only || die "scripts/setup.sh --device-only failed in $OPT (its message is above)"
if [[ $before == "$(cat "$stamp")" ]]; then
  step venv 0 "unchanged ($OPT/.venv)"
else
  step venv 1 "installed $OPT/.venv (device dependencies only)"
  RESTART=1
fi

# -- bundle: verified before anything uses it ----------------------------------------
key_args=()
if [[ -n $KEYS ]]; then
  key_args=(--trusted-keys "$KEYS")
elif compgen -G "$KEYS_DIR/*.pub" >/dev/null; then
  key_args=(--trusted-keys "$KEYS_DIR") # the keys an earlier run installed stay in force
fi
template_from=""
if [[ -n $BUNDLE ]]; then
  if ! out=$(cd "$OPT" && "$VENV_PY" -m firmware_tools verify "$BUNDLE" "${key_args[@]}" 2>&1); then
    reason=$(grep -m1 '^error: ' <<<"$out" || tail -n1 <<<"$out")
    die "--bundle $BUNDLE refused, nothing installed from it: ${reason#error: }"
  fi
  step bundle 0 "verified $BUNDLE${key_args[*]:+ (signature checked against ${key_args[1]})}"
  if [[ -z $CONFIG ]]; then
    (cd "$OPT" && "$VENV_PY" -m firmware_tools unpack "$BUNDLE" --to "$work/bundle" "${key_args[@]}" >/dev/null) ||
      die "--bundle $BUNDLE: cannot unpack it into $work/bundle"
    [[ -f $work/bundle/config.yaml ]] && template_from="the bundle's config.yaml" CONFIG_TEMPLATE=$work/bundle/config.yaml
  fi
fi

# -- user --------------------------------------------------------------------------
if [[ -n $ROOT ]]; then
  step user 0 "skipped (test root: no user, files keep the caller as owner)"
elif id -u "$ACCOUNT" >/dev/null 2>&1; then
  if [[ " $(id -nG "$ACCOUNT") " == *" audio "* ]]; then
    step user 0 "unchanged ($ACCOUNT, in group audio)"
  else
    usermod -a -G audio "$ACCOUNT"
    step user 1 "added $ACCOUNT to group audio"
  fi
else
  getent group audio >/dev/null || groupadd --system audio
  useradd --system --user-group --groups audio --home-dir "$STATE" --no-create-home \
    --shell /usr/sbin/nologin --comment "acmon device daemon" "$ACCOUNT"
  step user 1 "created system user $ACCOUNT (no login, home $STATE, group audio)"
fi

# -- directories ----------------------------------------------------------------------
touched=0
make_dir "$ETC" 750 root:$ACCOUNT
make_dir "$STATE" 700 $ACCOUNT:$ACCOUNT # what StateDirectory=acmon / StateDirectoryMode=0700 make it
step dirs "$touched" "$( ((touched)) && echo "made" || echo "unchanged:") $ETC (0750), $STATE (0700)"

# -- trusted keys -----------------------------------------------------------------------
if [[ -n $KEYS ]]; then
  touched=0
  make_dir "$KEYS_DIR" 750 root:$ACCOUNT
  names=()
  if [[ -d $KEYS ]]; then sources=("$KEYS"/*.pub); else sources=("$KEYS"); fi
  for key in "${sources[@]}"; do
    names+=("$(basename "$key")")
    put_file "$key" "$KEYS_DIR/$(basename "$key")" 640 root:$ACCOUNT
  done
  # The installed set is the one given: a key left out is no longer trusted.
  for key in "$KEYS_DIR"/*.pub; do
    if [[ ! " ${names[*]} " == *" $(basename "$key") "* ]]; then
      rm -f "$key"
      touched=1
    fi
  done
  step keys "$touched" "$( ((touched)) && echo "installed" || echo "unchanged:") ${#names[@]} key(s) in $KEYS_DIR"
  ((touched)) && RESTART=1
fi

# -- model -----------------------------------------------------------------------------
model_replaced=0
if [[ -n $BUNDLE ]]; then
  touched=0
  if [[ -f $MODEL ]] && ! cmp -s "$BUNDLE" "$MODEL"; then
    cp -p "$MODEL" "$MODEL.prev"
    model_replaced=1
  fi
  put_file "$BUNDLE" "$MODEL" 640 root:$ACCOUNT
  step model "$touched" "$( ((touched)) && echo "installed" || echo "unchanged:") $MODEL$( ((model_replaced)) && echo " (the previous one kept as model.acmon.prev)")"
  ((touched)) && RESTART=1
fi

# -- config ----------------------------------------------------------------------------
if [[ -n $CONFIG ]]; then
  CONFIG_TEMPLATE=$CONFIG template_from=$CONFIG
elif [[ -z $template_from ]]; then
  CONFIG_TEMPLATE=$OPT/configs/device.yaml template_from="the template configs/device.yaml"
fi
sets=()
if [[ -n $BUNDLE ]]; then
  sets+=(--set "model.path=$MODEL")
  compgen -G "$KEYS_DIR/*.pub" >/dev/null && sets+=(--set "model.trusted_keys=$KEYS_DIR")
fi
if ((${#sets[@]})); then
  # The values are replaced where they stand, so the template's comments stay (firmware_tools/config_edit.py).
  (cd "$OPT" && "$VENV_PY" -m firmware_tools.config_edit "$CONFIG_TEMPLATE" "${sets[@]}" -o "$work/acmon.yaml") ||
    die "cannot set model.path in $CONFIG_TEMPLATE (the reason is above)"
else
  cp "$CONFIG_TEMPLATE" "$work/acmon.yaml"
fi
touched=0
if [[ ! -e $CONF ]]; then
  put_file "$work/acmon.yaml" "$CONF" 640 root:$ACCOUNT
  step config 1 "wrote $CONF from $template_from"
  RESTART=1
elif cmp -s "$work/acmon.yaml" "$CONF"; then
  perms "$CONF" 640 root:$ACCOUNT
  step config "$touched" "unchanged ($CONF)"
else
  perms "$CONF" 640 root:$ACCOUNT
  put_file "$work/acmon.yaml" "$CONF.new" 640 root:$ACCOUNT
  if ((touched)); then
    step config 1 "kept $CONF as it is; the new one from $template_from is beside it: $CONF.new (diff -u $CONF $CONF.new)"
  else
    step config 0 "kept $CONF as it is; $CONF.new unchanged"
  fi
  # What this run installed but the kept config does not use: say so, or the new bundle (keys) would sit unused.
  for ((i = 1; i < ${#sets[@]}; i += 2)); do
    key=${sets[$i]%%=*} want=${sets[$i]#*=}
    in_use=$(cd "$OPT" && "$VENV_PY" -m firmware_tools.config_edit "$CONF" --get "$key" 2>/dev/null) || in_use="?"
    [[ $in_use == "$want" ]] ||
      warn "$CONF keeps $key: ${in_use:-(not set)}, not $want; set it there (or use $CONF.new) for what was installed"
  done
fi

as_service "$VENV_PY" -c '' 2>/dev/null ||
  die "$ACCOUNT cannot run $VENV_PY (its interpreter is $(readlink -f "$VENV_PY")): remove $OPT/.venv and run install.sh again, with PYTHON=/usr/bin/python3 if it was made from another Python"

# -- microphone ------------------------------------------------------------------------
if [[ $MIC == off ]]; then
  step mic 0 "not checked (--no-mic-check)"
elif ((SYSTEMD)) && systemctl is-active --quiet "$SERVICE"; then
  step mic 0 "not checked: $SERVICE is running and holds the microphone (its telemetry reports the level)"
else
  say "Checking the microphone (a few seconds; --no-mic-check skips this)"
  rc=0
  out=$(as_service "$VENV_PY" -m firmware_tools mic-check --config "$CONF" 2>&1) || rc=$?
  indent <<<"$out"
  # Its verdict (or error) line; the summary keeps the part before the first ';' (the advice follows it).
  finding=$(grep -m1 -E '^(verdict|error:) ' <<<"$out" || tail -n1 <<<"$out")
  finding=$(sed -E 's/^(verdict|error:) +//' <<<"$finding")
  if ((rc == 0)); then
    step mic 0 "${finding%%;*}"
  else
    [[ $MIC == required ]] && die "microphone check (--mic-check): $finding"
    warn "microphone check: $finding"
    step mic 0 "PROBLEM (the install goes on): ${finding%%;*}"
  fi
fi

# -- check-config, as the daemon will load it ------------------------------------------
if ! out=$(as_service "$VENV_PY" -m device check-config "$CONF" 2>&1); then
  printf '%s\n' "$out" >&2
  if ((model_replaced)); then
    mv -f "$MODEL.prev" "$MODEL"
    warn "put the previous model back in $MODEL"
  fi
  cmp -s "$work/acmon.yaml" "$CONF.new" && warn "the config install.sh would write is $CONF.new: mv it over $CONF to use it"
  die "check-config refused $CONF (above): edit it, or give --config / --bundle, and run install.sh again"
fi
grep '^warning: ' <<<"$out" | indent || true
step check 0 "$(tail -n1 <<<"$out")"

# -- systemd unit ----------------------------------------------------------------------
touched=0
mkdir -p "$UNIT_DIR"
put_file "$OPT/systemd/$UNIT" "$UNIT_DIR/$UNIT" 644 root:root
unit_changed=$touched
((unit_changed)) && RESTART=1
if ((SYSTEMD)); then
  ((unit_changed)) && systemctl daemon-reload
  if ! systemctl is-enabled --quiet "$SERVICE"; then
    systemctl enable --quiet "$SERVICE"
    touched=1
  fi
  failed="$SERVICE did not start: see journalctl -u $SERVICE -n 50"
  if ((!START)); then
    state="enabled, not started (--no-start)"
  elif systemctl is-active --quiet "$SERVICE"; then
    if ((RESTART)); then
      systemctl restart "$SERVICE" || die "$failed"
      state="restarted (it runs what changed)"
      touched=1
    else
      state="enabled and running"
    fi
  else
    systemctl start "$SERVICE" || die "$failed"
    state="enabled and started"
    touched=1
  fi
else
  # What `systemctl enable` does for WantedBy=: a link in the target's .wants folder (absolute, as systemd makes it).
  wanted_by=$(grep -m1 '^WantedBy=' "$UNIT_DIR/$UNIT" || echo WantedBy=multi-user.target)
  link=$UNIT_DIR/${wanted_by#WantedBy=}.wants/$UNIT
  if [[ $(readlink "$link" 2>/dev/null) != "/etc/systemd/system/$UNIT" ]]; then
    mkdir -p "$(dirname "$link")"
    ln -sfn "/etc/systemd/system/$UNIT" "$link"
    touched=1
  fi
  state="enabled; systemd is not running here (chroot, container or test root): not started, it starts at boot"
fi
step unit "$touched" "$( ((touched)) && echo "installed," || echo "unchanged,") $state"

summary
echo "Config: $CONF   Logs: journalctl -u $SERVICE -f   Microphone: $VENV_PY -m firmware_tools mic-check"
