#!/usr/bin/env bash
# Train on a GPU cluster with SLURM: submits a batch job whose tasks all run lst_jax.main;
# process 0's node is the coordinator, taken from SLURM's environment.
#
# Usage: launch/slurm.sh --nodes=N --gpus_per_node=G [options] [-- MAIN_FLAGS...]
#   MAIN_FLAGS             passed to lst_jax.main as they are, e.g. -- --config.data.dir=/data/mine
#   --nodes=N              nodes (default 1)
#   --gpus_per_node=G      GPUs per node (default 8)
#   --per=gpu|node         one process per GPU (default: each uses GPU SLURM_LOCALID, or the
#                          only GPU in CUDA_VISIBLE_DEVICES if SLURM binds one GPU per task)
#                          or one per node (each uses all G GPUs of its node)
#   --partition=P --account=A --time=HH:MM:SS --qos=Q   passed to sbatch when given
#   --sbatch_args='...'    any other sbatch options (split on spaces)
#   --exp=EXP              experiment in experiments/ (default demo)
#   --workdir=DIR          run directory on the shared filesystem, or gs://BUCKET/PATH (default runs/EXP)
#   --data=DIR             the prepared dataset (--config.data.dir): a shared path or gs://BUCKET/PATH
#   --credentials=FILE     a service-account key on the shared filesystem for gs:// paths (exported
#                          as GOOGLE_APPLICATION_CREDENTIALS to every task); default: the
#                          application-default credentials (`gcloud auth application-default login`)
#   --port=PORT            coordinator port (default 61440 + job id % 4096)
#   --venv=DIR             virtualenv on the shared filesystem (default .venv; created with
#                          the pinned dependencies and jax[cuda12] when missing)
#   --dry_run              print every command instead of running it
# Logs: logs/slurm-<jobid>.out, every line prefixed with its task number (srun --label);
# stream with `tail -F logs/slurm-<jobid>.out`.
#
# Stages (the script calls itself): on the login node it submits itself with sbatch
# (--stage=batch); in the batch step it finds the coordinator (first node of the job) and
# starts one task per process with srun (--stage=task); each task runs lst_jax.main with
# --multihost=manual --coordinator_address --num_processes=$SLURM_NTASKS --process_id=$SLURM_PROCID.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

stage=submit nodes=1 gpus=8 per=gpu partition='' account='' time_limit='' qos='' sbatch_args=''
exp=demo workdir='' data='' credentials='' port='' venv=.venv dry_run=0
main_args=()
while [ $# -gt 0 ]; do
  arg=$1; shift
  case "$arg" in
    --) main_args=("$@"); break ;;
    --stage=*) stage=${arg#*=} ;;
    --nodes=*) nodes=${arg#*=} ;;
    --gpus_per_node=*) gpus=${arg#*=} ;;
    --per=*) per=${arg#*=} ;;
    --partition=*) partition=${arg#*=} ;;
    --account=*) account=${arg#*=} ;;
    --time=*) time_limit=${arg#*=} ;;
    --qos=*) qos=${arg#*=} ;;
    --sbatch_args=*) sbatch_args=${arg#*=} ;;
    --exp=*) exp=${arg#*=} ;;
    --workdir=*) workdir=${arg#*=} ;;
    --data=*) data=${arg#*=} ;;
    --credentials=*) credentials=${arg#*=} ;;
    --port=*) port=${arg#*=} ;;
    --venv=*) venv=${arg#*=} ;;
    --dry_run) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $arg (see --help)" ;;
  esac
done
[[ $nodes =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer, got $nodes"
[[ $gpus =~ ^[1-9][0-9]*$ ]] || die "--gpus_per_node must be a positive integer, got $gpus"
[[ $per == gpu || $per == node ]] || die "--per must be gpu or node, got $per"
[[ -z $port || $port =~ ^[1-9][0-9]*$ ]] || die "--port must be a number, got $port"
[[ $stage == submit || $stage == batch || $stage == task ]] || die "--stage must be submit, batch or task"
[ -n "$workdir" ] || workdir=runs/$exp
[ -z "$data" ] || main_args=(--config.data.dir="$data" "${main_args[@]}")
[ -z "$credentials" ] || [ -f "$credentials" ] || [ "$dry_run" = 1 ] || die "--credentials=$credentials: no such file"

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
[ -f "experiments/$exp.py" ] || die "unknown experiment --exp=$exp (no experiments/$exp.py)"
self=launch/slurm.sh
# The options every stage passes on to the next.
forward=(--nodes="$nodes" --gpus_per_node="$gpus" --per="$per" --exp="$exp" --workdir="$workdir"
         --venv="$venv")
[ -z "$port" ] || forward+=(--port="$port")
[ -z "$credentials" ] || forward+=(--credentials="$credentials")
forward_main=(-- "${main_args[@]}")


submit() {
  if [ ! -x "$venv/bin/python" ] || [ "$dry_run" = 1 ]; then
    local jax_version
    jax_version=$(sed -n 's/^ *"jax==\([^"]*\)",*$/\1/p' pyproject.toml)
    [ -n "$jax_version" ] || die "no pinned jax version in pyproject.toml"
    [ "$dry_run" = 0 ] || echo "# only if $venv is missing:"
    run python3 -m venv "$venv"
    run "$venv/bin/pip" install -q -e . "jax[cuda12]==$jax_version"
  fi
  local tasks_per_node=$gpus
  [ "$per" = gpu ] || tasks_per_node=1
  local sbatch=(sbatch --job-name="lst-$exp" --nodes="$nodes" --ntasks-per-node="$tasks_per_node"
                --gres="gpu:$gpus" --output=logs/slurm-%j.out --chdir="$repo")
  [ -z "$partition" ] || sbatch+=(--partition="$partition")
  [ -z "$account" ] || sbatch+=(--account="$account")
  [ -z "$time_limit" ] || sbatch+=(--time="$time_limit")
  [ -z "$qos" ] || sbatch+=(--qos="$qos")
  if [ -n "$sbatch_args" ]; then
    local extra
    read -r -a extra <<< "$sbatch_args"
    sbatch+=("${extra[@]}")
  fi
  [ "$stage" != submit ] || check_buckets "$workdir" "$data"
  run mkdir -p logs
  run "${sbatch[@]}" "$self" --stage=batch "${forward[@]}" "${forward_main[@]}"
  if [ "$dry_run" = 1 ]; then  # show what the next stages run, with SLURM's values as variables
    echo "# in the batch step, on the job's first node:"
    batch
    echo "# in every task:"
    task
  else
    echo ">> submitted; logs in logs/slurm-<jobid>.out (tail -F them to stream)"
  fi
}

batch() {
  local head
  if [ "$dry_run" = 1 ] && [ -z "${SLURM_JOB_NODELIST:-}" ]; then
    # shellcheck disable=SC2016  # shown as the batch step computes them
    echo '+ HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'
    # shellcheck disable=SC2016
    head='$HEAD_NODE'
    # shellcheck disable=SC2016
    port=${port:-'$((61440 + SLURM_JOB_ID % 4096))'}
  else
    head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    port=${port:-$((61440 + SLURM_JOB_ID % 4096))}
  fi
  local env=(env "LST_COORDINATOR=$head:$port")
  [ -z "$credentials" ] || env+=("GOOGLE_APPLICATION_CREDENTIALS=$credentials")
  run "${env[@]}" srun --label --kill-on-bad-exit=1 "$self" --stage=task "${forward[@]}" "${forward_main[@]}"
}

task() {
  local coordinator=${LST_COORDINATOR:-} ntasks=${SLURM_NTASKS:-} procid=${SLURM_PROCID:-} localid=${SLURM_LOCALID:-}
  if [ "$dry_run" = 1 ]; then  # placeholders where SLURM's values are not set
    # shellcheck disable=SC2016
    coordinator=${coordinator:-'$LST_COORDINATOR'} ntasks=${ntasks:-'$SLURM_NTASKS'}
    # shellcheck disable=SC2016
    procid=${procid:-'$SLURM_PROCID'} localid=${localid:-'$SLURM_LOCALID'}
  fi
  if [ -z "$coordinator" ] || [ -z "$ntasks" ] || [ -z "$procid" ] || [ -z "$localid" ]; then
    die "--stage=task runs inside srun (LST_COORDINATOR, SLURM_NTASKS, SLURM_PROCID or SLURM_LOCALID unset)"
  fi
  local devices=$localid
  if [ "$per" = node ]; then
    devices=$(seq -s, 0 $((gpus - 1)))
  elif [[ ${CUDA_VISIBLE_DEVICES:-} =~ ^[0-9]+$ ]]; then
    devices=0  # SLURM bound one GPU to this task: it is the task's device 0
  fi
  local cmd=("$venv/bin/python" -m lst_jax.main --config="experiments/$exp.py" --workdir="$workdir"
             --multihost=manual --coordinator_address="$coordinator" --num_processes="$ntasks"
             --process_id="$procid" --local_device_ids="$devices")
  cmd+=("${main_args[@]}")
  if [ "$dry_run" = 1 ]; then run "${cmd[@]}"; else exec "${cmd[@]}"; fi
}

case "$stage" in
  submit) submit ;;
  batch) batch ;;
  task) task ;;
esac
