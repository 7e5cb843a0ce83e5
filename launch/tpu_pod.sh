#!/usr/bin/env bash
# Train on a Cloud TPU VM slice (one or many hosts): create or reuse the slice, install
# this checkout on every worker, start the same `make train` on every worker, stream logs.
#
# Usage: launch/tpu_pod.sh [all|up|run|logs|delete] --name=NAME --zone=ZONE [options] [-- MAIN_FLAGS...]
#   all     (default) up, then run
#   up      create the TPU VM slice unless it exists; copy this checkout (git HEAD) to every
#           worker and install it (make setup, then jax[tpu] at the pinned jax version)
#   run     start `make train EXP=... WORKDIR=... ARGS='MAIN_FLAGS'` on every worker
#           (detached: a lost connection does not stop training) and stream worker 0's log
#   logs    stream the training log again (Ctrl-C stops streaming, not training)
#   delete  delete the slice
# Options:
#   --name=NAME             TPU VM name (required)
#   --zone=ZONE             e.g. us-central2-b (required)
#   --accelerator=TYPE      slice type for `up`, e.g. v4-32, v5litepod-16 (default v4-8)
#   --version=IMAGE         TPU VM software version (default tpu-ubuntu2204-base)
#   --project=PROJECT       gcloud project (default: gcloud's configured one)
#   --spot                  create a Spot slice
#   --exp=EXP               experiment in experiments/ (default demo)
#   --size=SIZE             the experiment's size and deployment, e.g. 1b@v5p-64 (make aot lists them;
#                           a size alone takes its first deployment, which may be a GPU one)
#   --workdir=DIR           run directory, the same path on every worker (default runs/EXP);
#                           pod workers share no disk and a preempted VM loses its own: use
#                           gs://BUCKET/PATH (checkpoints, metrics, events, evaluations go there)
#   --data=DIR              the prepared dataset (--config.data.dir), e.g. gs://BUCKET/data; array_record
#                           reads gs:// shards itself (one GET per record: see README, Training at scale)
#   --service_account=EMAIL the slice's service account for `up` (default: the project's default
#                           compute account); the VM gets the cloud-platform scope, so the workers
#                           reach Cloud Storage as that account, with no key files
#   --pre='CMD'             shell command run on every worker before training (e.g. fetch data)
#   --python=PYTHON         Python >= 3.11 on the workers (default python3.11, installed via apt)
#   --follow=WORKER         whose log to stream: a worker index or `all` (default 0)
#   --dry_run               print every command instead of running it
#   -- MAIN_FLAGS           flags for lst_jax.main as they are, e.g. -- --config.train.steps=100
# Every worker runs the same command; lst_jax.main finds the others by itself
# (--multihost=auto detects the Cloud TPU: jax.distributed.initialize() with no arguments).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

action=all name='' zone='' accelerator=v4-8 version=tpu-ubuntu2204-base project='' spot=0
exp=demo size='' workdir='' data='' service_account='' pre='' python=python3.11 follow=0 dry_run=0
case "${1:-}" in all|up|run|logs|delete) action=$1; shift ;; esac
main_args=()
while [ $# -gt 0 ]; do
  arg=$1; shift
  case "$arg" in
    --) main_args=("$@"); break ;;
    --name=*) name=${arg#*=} ;;
    --zone=*) zone=${arg#*=} ;;
    --accelerator=*) accelerator=${arg#*=} ;;
    --version=*) version=${arg#*=} ;;
    --project=*) project=${arg#*=} ;;
    --spot) spot=1 ;;
    --exp=*) exp=${arg#*=} ;;
    --size=*) size=${arg#*=} ;;
    --workdir=*) workdir=${arg#*=} ;;
    --data=*) data=${arg#*=} ;;
    --service_account=*) service_account=${arg#*=} ;;
    --pre=*) pre=${arg#*=} ;;
    --python=*) python=${arg#*=} ;;
    --follow=*) follow=${arg#*=} ;;
    --dry_run) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $arg (see --help)" ;;
  esac
done
[ -n "$name" ] || die "--name=NAME is required"
[ -n "$zone" ] || die "--zone=ZONE is required"
[ -n "$workdir" ] || workdir=runs/$exp
[ -z "$data" ] || main_args=(--config.data.dir="$data" "${main_args[@]}")
[[ $workdir == gs://* ]] || echo "note: --workdir=$workdir is on each worker's own disk (lost with a preempted" \
  "VM; multi-host runs need one shared path): use --workdir=gs://BUCKET/PATH" >&2
[[ $follow == all || $follow =~ ^[0-9]+$ ]] || die "--follow must be a worker index or all, got $follow"

repo=$(cd "$(dirname "$0")/.." && pwd)
[ -f "$repo/experiments/$exp.py" ] || die "unknown experiment --exp=$exp (no experiments/$exp.py)"
jax_version=$(sed -n 's/^ *"jax==\([^"]*\)",*$/\1/p' "$repo/pyproject.toml")
[ -n "$jax_version" ] || die "no pinned jax version in pyproject.toml"
remote_dir=lst-jax
tarball=/tmp/lst-jax-$name.tar.gz


gcloud_tpu=(gcloud compute tpus tpu-vm)
where=(--zone="$zone")
[ -z "$project" ] || where+=(--project="$project")
on_workers() {  # on_workers WORKER COMMAND: run a shell command on one or all workers
  run "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker="$1" --command="$2"
}

up() {
  local create=("${gcloud_tpu[@]}" create "$name" "${where[@]}" --accelerator-type="$accelerator"
                --version="$version")
  [ "$spot" = 0 ] || create+=(--spot)
  [ -z "$service_account" ] || create+=(--service-account="$service_account")
  create+=(--scopes=https://www.googleapis.com/auth/cloud-platform)  # Cloud Storage as the VM's account
  if [ "$dry_run" = 1 ]; then
    echo "# create the slice unless this finds it:"
    run "${gcloud_tpu[@]}" describe "$name" "${where[@]}"
    run "${create[@]}"
  elif "${gcloud_tpu[@]}" describe "$name" "${where[@]}" >/dev/null 2>&1; then
    echo ">> reusing TPU VM $name in $zone"
  else
    echo ">> creating TPU VM $name ($accelerator) in $zone"
    run "${create[@]}"
  fi
  run git -C "$repo" archive --format=tar.gz -o "$tarball" HEAD
  run "${gcloud_tpu[@]}" scp "$tarball" "$name:lst-jax.tar.gz" "${where[@]}" --worker=all
  local install
  install="set -e; sudo apt-get update -qq && sudo apt-get install -y -qq $python ${python}-venv make >/dev/null"
  install+="; mkdir -p $remote_dir && tar -xzf lst-jax.tar.gz -C $remote_dir && cd $remote_dir"
  install+=" && make setup PYTHON=$python && .venv/bin/pip install -q $(printf '%q' "jax[tpu]==$jax_version")"
  on_workers all "$install"
}

start() {
  local train cmd args=''
  check_buckets "$workdir" "$data"
  # make pastes ARGS into its shell command: each flag quoted once for that shell, once for this one.
  [ ${#main_args[@]} = 0 ] || args=$(printf '%q ' "${main_args[@]}")
  train="make train EXP=$(printf '%q' "$exp")${size:+ SIZE=$(printf '%q' "$size")} WORKDIR=$(printf '%q' "$workdir") ARGS=$(printf '%q' "${args% }")"
  cmd="cd $remote_dir && mkdir -p logs"
  [ -z "$pre" ] || cmd+=" && ($pre)"
  cmd+=" && (setsid nohup $train > logs/train.log 2>&1 < /dev/null &)"
  on_workers all "$cmd"
}

logs() {
  on_workers "$follow" "tail -n +1 -F $remote_dir/logs/train.log"
}

case "$action" in
  all) up; start; logs ;;
  up) up ;;
  run) start; logs ;;
  logs) logs ;;
  delete) run "${gcloud_tpu[@]}" delete "$name" "${where[@]}" --quiet ;;
esac
