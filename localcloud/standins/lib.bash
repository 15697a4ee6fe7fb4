# Shared part of corekube's stand-in executables (localcloud/standins/), inlined into each one when a release
# mirror is built (so an installed stand-in is one self-contained file) and sourced from here when a
# stand-in runs straight from the source tree. Not a real program: see the STAND-IN line of each script.
#
# What every stand-in does: parse `--flag=value` / `--flag` arguments into `flag[...]`, let the script check
# them (`need`, `is`, `forbid`, `https_list`, `config_has`; a violation exits 2 naming the flag), then
# `standin_run`: append one line to $COREKUBE_STANDIN_DIR/<name>.starts and stay up until SIGTERM/SIGINT.
set -uo pipefail
standin_name=${standin_name:-$(basename "$0")}
standin_state=${COREKUBE_STANDIN_DIR:-/var/lib/corekube-standin}
declare -A flag=()

fail() {
  echo "STAND-IN $standin_name: $*" >&2
  exit 2
}

for arg in "$@"; do
  case "$arg" in
    --version | version) echo "$standin_name STAND-IN (not the real $standin_name)"; exit 0 ;;
    --*=*) key=${arg%%=*}; flag[${key#--}]=${arg#*=} ;;
    --*) flag[${arg#--}]=true ;;
    *) fail "unexpected argument '$arg': corekube's units pass only --flag=value and --flag" ;;
  esac
done

# need FLAG: the flag is given with a non-empty value
need() { [ -n "${flag[$1]:-}" ] || fail "--$1 is required"; }
# is FLAG VALUE: the flag has exactly this value
is() { [ "${flag[$1]:-}" = "$2" ] || fail "--$1 must be $2 (got '${flag[$1]:-<not given>}')"; }
# forbid FLAG: the flag is not given at all (insecure or removed flags)
forbid() { [ -z "${flag[$1]+x}" ] || fail "--$1 must not be given (got '${flag[$1]}'): it is insecure or removed"; }
# has_item FLAG ITEM: the comma-separated flag value contains ITEM
has_item() { [[ ",${flag[$1]:-}," == *",$2,"* ]] || fail "--$1 must include $2 (got '${flag[$1]:-<not given>}')"; }
# lacks_item FLAG ITEM: the comma-separated flag value does not contain ITEM
lacks_item() { [[ ",${flag[$1]:-}," != *",$2,"* ]] || fail "--$1 must not include $2 (got '${flag[$1]}')"; }
# https_list FLAG: a non-empty comma-separated list of https:// URLs
https_list() {
  need "$1"
  local url
  IFS=',' read -r -a urls <<< "${flag[$1]}"
  for url in "${urls[@]}"; do
    [[ "$url" == https://* ]] || fail "--$1 must list only https:// URLs (got '$url')"
  done
}
# file_flag FLAG: the flag names a file that exists (files corekube writes with the units, not PKI files)
file_flag() { need "$1"; [ -f "${flag[$1]}" ] || fail "--$1 names ${flag[$1]}, which does not exist"; }
# config_has FLAG REGEX WHAT: the file named by FLAG has a line matching REGEX
config_has() { grep -Eq -- "$2" "${flag[$1]}" || fail "--$1 ${flag[$1]}: $3"; }

# standin_run: count this start, then stay up like a daemon until asked to stop
standin_run() {
  mkdir -p "$standin_state" || fail "cannot create $standin_state"
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) pid=$$" >> "$standin_state/$standin_name.starts"
  # the trap is set before "running" is announced, so a SIGTERM right after it still exits 0
  standin_child=
  trap '[ -n "$standin_child" ] && kill "$standin_child" 2>/dev/null; exit 0' TERM INT
  sleep infinity &
  standin_child=$!
  echo "STAND-IN $standin_name: flags accepted, running (pid $$)"
  wait "$standin_child"
}
