# Shared by the launchers (sourced): errors, display quoting, and --dry_run.
# shellcheck shell=bash

die() { echo "error: $*" >&2; exit 2; }

# Shell-quotes one word for display: as is when safe; "$VAR" placeholders in double quotes
# (they expand where the command runs); else --opt='value' / 'word'.
quote() {
  # shellcheck disable=SC2016  # the placeholder pattern matches a literal $
  local word=$1 safe='^[A-Za-z0-9_./:=,@%+^-]+$' placeholder='^[^"`\\]*[$][^"`\\]*$'
  if [[ $word =~ $safe ]]; then
    printf '%s' "$word"
  elif [[ $word =~ $placeholder ]] && [[ $word =~ ^(--[A-Za-z0-9_-]+=)?(.*)$ ]]; then
    printf '%s"%s"' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
  elif [[ $word =~ ^(--[A-Za-z0-9_-]+=)(.*)$ ]]; then
    printf "%s'%s'" "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]//\'/\'\\\'\'}"
  else
    printf "'%s'" "${word//\'/\'\\\'\'}"
  fi
}

# Checks, before anything starts, that this machine's credentials reach the bucket of each
# gs:// path given (local paths are skipped); with --dry_run prints the check.
check_buckets() {
  local path bucket seen=' '
  for path in "$@"; do
    [[ $path == gs://* ]] || continue
    bucket=${path#gs://}
    bucket=gs://${bucket%%/*}
    [[ $seen == *" $bucket "* ]] && continue
    seen+="$bucket "
    # shellcheck disable=SC2154  # dry_run is the sourcing launcher's flag
    if [ "$dry_run" = 1 ]; then
      run gcloud storage buckets describe "$bucket" --format='value(name)'
    else
      gcloud storage buckets describe "$bucket" --format='value(name)' >/dev/null \
        || die "cannot reach $bucket (for $path): check the bucket name and your credentials"
    fi
  done
}

# Runs a command, or prints it (shell-quoted, runnable) with --dry_run (the caller's dry_run=1).
run() {
  # shellcheck disable=SC2154  # dry_run is the sourcing launcher's flag
  if [ "$dry_run" = 1 ]; then
    local word line='+'
    for word in "$@"; do line+=" $(quote "$word")"; done
    printf '%s\n' "$line"
  else
    "$@"
  fi
}
