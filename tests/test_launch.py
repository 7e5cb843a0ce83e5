"""The launchers (launch/tpu_pod.sh, launch/slurm.sh) print what they would run with
--dry_run; the printed commands carry the expected pieces and parse as shell; shellcheck."""

import os
import re
import shlex
import shutil
import subprocess

from lst_jax import distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU = os.path.join(REPO, "launch", "tpu_pod.sh")
SLURM = os.path.join(REPO, "launch", "slurm.sh")
JAX_VERSION = re.search(r'"jax==([^"]+)"', open(os.path.join(REPO, "pyproject.toml")).read()).group(1)


def _run(script, *args, env=None, check=True):
  full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LST_", "CUDA_VISIBLE"))}
  full_env.update(env or {})
  out = subprocess.run(["bash", script, *args], capture_output=True, text=True, env=full_env, cwd="/",
                       timeout=60)
  if check:
    assert out.returncode == 0, out.stderr
  return out


def _commands(stdout):
  """The printed commands ('+ ...' lines), each split as the shell would."""
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def _option(argv, name):
  return next(a.split("=", 1)[1] for a in argv if a.startswith(name + "="))


def test_tpu_pod_dry_run():
  out = _run(TPU, "--name=lst-pod", "--zone=us-central2-b", "--accelerator=v4-32", "--spot", "--project=proj",
             "--exp=demo", "--workdir=/mnt/runs/demo", "--pre=gcloud storage rsync -r gs://b/data data/mine",
             "--dry_run", "--", "--config.train.steps=100", "--config.data.dir=data/my data")
  cmds = _commands(out.stdout)
  tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
  describe, create, archive, scp, install, start, tail = cmds
  assert describe[:6] == tpu + ["describe", "lst-pod"] and "--zone=us-central2-b" in describe
  assert create[:6] == tpu + ["create", "lst-pod"]
  assert {"--accelerator-type=v4-32", "--spot", "--project=proj", "--zone=us-central2-b"} <= set(create)
  assert archive[:2] == ["git", "-C"] and "archive" in archive and archive[-1] == "HEAD"
  assert scp[4] == "scp" and "--worker=all" in scp and "lst-pod:lst-jax.tar.gz" in scp
  # Install and train on every worker, stream worker 0's log.
  assert install[4:6] == ["ssh", "lst-pod"] and "--worker=all" in install
  script = _option(install, "--command")
  assert "make setup PYTHON=python3.11" in script and f"jax\\[tpu\\]=={JAX_VERSION}" in script
  assert "--worker=all" in start
  script = _option(start, "--command")
  assert "gcloud storage rsync -r gs://b/data data/mine" in script
  assert "setsid nohup make train EXP=demo WORKDIR=/mnt/runs/demo ARGS=" in script
  assert "> logs/train.log" in script
  # ARGS survives two shells: the worker's (this command) and make's recipe shell.
  make_args = next(w for w in shlex.split(script) if w.startswith("ARGS="))[len("ARGS="):]
  assert shlex.split(make_args) == ["--config.train.steps=100", "--config.data.dir=data/my data"]
  assert "--worker=0" in tail and "tail -n +1 -F lst-jax/logs/train.log" in _option(tail, "--command")


def test_tpu_pod_actions_and_errors():
  logs = _commands(_run(TPU, "logs", "--name=p", "--zone=z", "--follow=all", "--dry_run").stdout)
  assert len(logs) == 1 and "--worker=all" in logs[0]
  delete = _commands(_run(TPU, "delete", "--name=p", "--zone=z", "--dry_run").stdout)
  assert delete == [["gcloud", "compute", "tpus", "tpu-vm", "delete", "p", "--zone=z", "--quiet"]]
  for args, message in ((["--zone=z"], "--name=NAME is required"), (["--name=p"], "--zone=ZONE is required"),
                        (["--name=p", "--zone=z", "--exp=nope"], "unknown experiment --exp=nope"),
                        (["--name=p", "--zone=z", "--bogus"], "unknown option --bogus")):
    out = _run(TPU, *args, "--dry_run", check=False)
    assert out.returncode == 2 and message in out.stderr and not out.stdout
  assert "Usage: launch/tpu_pod.sh" in _run(TPU, "--help").stdout


def test_slurm_dry_run_per_gpu():
  out = _run(SLURM, "--nodes=2", "--gpus_per_node=8", "--partition=gpu", "--time=24:00:00", "--exp=demo",
             "--workdir=/shared/runs/demo", "--dry_run", "--", "--config.train.steps=100", "--config.x=a b")
  venv, pip, mkdir, sbatch, head, srun, task = _commands(out.stdout)
  assert pip[1:4] == ["install", "-q", "-e"] and f"jax[cuda12]=={JAX_VERSION}" in pip
  assert sbatch[0] == "sbatch"
  assert {"--nodes=2", "--ntasks-per-node=8", "--gres=gpu:8", "--partition=gpu", "--time=24:00:00",
          "--output=logs/slurm-%j.out"} <= set(sbatch)
  i = sbatch.index("launch/slurm.sh")
  assert sbatch[i + 1] == "--stage=batch" and sbatch[-3:] == ["--", "--config.train.steps=100", "--config.x=a b"]
  assert "--dry_run" not in sbatch
  # Batch step: the coordinator is the job's first node, on a port from the job id.
  assert head[0] == "HEAD_NODE=$(scontrol" and \
      '+ HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in out.stdout.splitlines()
  assert srun[:2] == ["env", "LST_COORDINATOR=$HEAD_NODE:$((61440 + SLURM_JOB_ID % 4096))"]
  assert srun[2:4] == ["srun", "--label"] and "--stage=task" in srun
  # Every task: one process per GPU, ids from SLURM.
  assert task[:3] == [".venv/bin/python", "-m", "lst_jax.main"]
  assert {"--config=experiments/demo.py", "--workdir=/shared/runs/demo", "--multihost=manual",
          "--coordinator_address=$LST_COORDINATOR", "--num_processes=$SLURM_NTASKS",
          "--process_id=$SLURM_PROCID", "--local_device_ids=$SLURM_LOCALID"} <= set(task)
  assert task[-2:] == ["--config.train.steps=100", "--config.x=a b"]


def test_slurm_per_node_and_stages():
  cmds = _commands(_run(SLURM, "--nodes=4", "--gpus_per_node=4", "--per=node", "--dry_run").stdout)
  assert "--ntasks-per-node=1" in cmds[3] and "--gres=gpu:4" in cmds[3]
  assert "--local_device_ids=0,1,2,3" in cmds[-1]
  # The batch stage inside a job (scontrol faked): coordinator node001, port 61440 + 1234.
  fake_bin = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fake-scontrol-{os.getpid()}")
  os.makedirs(fake_bin, exist_ok=True)
  with open(os.path.join(fake_bin, "scontrol"), "w") as f:
    f.write("#!/bin/sh\nprintf 'node001\\nnode002\\n'\n")
  os.chmod(os.path.join(fake_bin, "scontrol"), 0o755)
  env = {"PATH": f"{fake_bin}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "node[001-002]", "SLURM_JOB_ID": "1234"}
  (srun,) = _commands(_run(SLURM, "--stage=batch", "--nodes=2", "--dry_run", env=env).stdout)
  assert srun[:3] == ["env", "LST_COORDINATOR=node001:62674", "srun"]
  # A task: its values from SLURM, accepted by lst_jax.distributed.
  task_env = {"LST_COORDINATOR": "node001:62674", "SLURM_NTASKS": "16", "SLURM_PROCID": "11",
              "SLURM_LOCALID": "3"}
  (task,) = _commands(_run(SLURM, "--stage=task", "--nodes=2", "--dry_run", env=task_env).stdout)
  opts = distributed.Options(mode=_option(task, "--multihost"),
                             coordinator_address=_option(task, "--coordinator_address"),
                             num_processes=int(_option(task, "--num_processes")),
                             process_id=int(_option(task, "--process_id")),
                             local_device_ids=tuple(int(i) for i in _option(task, "--local_device_ids").split(",")))
  plan = distributed.plan(opts)
  assert plan.kwargs["coordinator_address"] == "node001:62674" and plan.kwargs["process_id"] == 11
  assert plan.kwargs["local_device_ids"] == [3]
  # SLURM bound one GPU to the task: it is the task's only (first) device.
  (task,) = _commands(_run(SLURM, "--stage=task", "--dry_run", env={**task_env, "CUDA_VISIBLE_DEVICES": "3"}).stdout)
  assert "--local_device_ids=0" in task
  out = _run(SLURM, "--stage=task", check=False)
  assert out.returncode == 2 and "runs inside srun" in out.stderr
  for args, message in ((["--per=core"], "--per must be gpu or node"), (["--nodes=0"], "--nodes must be"),
                        (["--exp=nope"], "unknown experiment"), (["--what"], "unknown option --what")):
    out = _run(SLURM, *args, "--dry_run", check=False)
    assert out.returncode == 2 and message in out.stderr


def test_shellcheck():
  shellcheck = shutil.which("shellcheck")
  assert shellcheck is not None, ("shellcheck is not installed, so the launchers cannot be linted: "
                                  "make setup installs it (Debian/Ubuntu: sudo apt-get install -y shellcheck)")
  out = subprocess.run([shellcheck, "--severity=info", "--external-sources", TPU, SLURM,
                        os.path.join(os.path.dirname(TPU), "common.sh"), os.path.join(REPO, "tools", "accel_check.sh")],
                       cwd=os.path.dirname(os.path.dirname(TPU)),
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stdout + out.stderr


def test_gcs_paths_and_credentials_in_both_launchers():
  """A pod's workdir and data on gs://: each bucket checked once from the launching machine before
  anything starts, the slice given the cloud-platform scope (its service account reaches Cloud
  Storage, no key files), the paths passed as they are; SLURM tasks get a key file when named."""
  out = _run(TPU, "all", "--name=p", "--zone=z", "--service_account=trainer@proj.iam.gserviceaccount.com",
             "--workdir=gs://my-runs/lst/demo", "--data=gs://my-data/demo", "--dry_run", "--", "--config.train.steps=9")
  cmds = _commands(out.stdout)
  create = next(c for c in cmds if "create" in c)
  assert {"--service-account=trainer@proj.iam.gserviceaccount.com",
          "--scopes=https://www.googleapis.com/auth/cloud-platform"} <= set(create)
  checks = [c for c in cmds if c[:4] == ["gcloud", "storage", "buckets", "describe"]]
  assert [c[4] for c in checks] == ["gs://my-runs", "gs://my-data"]
  start = _option(next(c for c in cmds if "--worker=all" in c and "setsid" in " ".join(c)), "--command")
  assert cmds.index(checks[-1]) < cmds.index(next(c for c in cmds if "setsid" in " ".join(c)))
  assert "WORKDIR=gs://my-runs/lst/demo" in start
  make_args = next(w for w in shlex.split(start) if w.startswith("ARGS="))[len("ARGS="):]
  assert shlex.split(make_args) == ["--config.data.dir=gs://my-data/demo", "--config.train.steps=9"]
  assert "note:" not in out.stderr
  local = _run(TPU, "run", "--name=p", "--zone=z", "--workdir=runs/x", "--dry_run")
  assert "note: --workdir=runs/x is on each worker's own disk" in local.stderr

  out = _run(SLURM, "--nodes=2", "--workdir=gs://b-runs/r", "--data=gs://b-runs/data",
             "--credentials=/shared/key.json", "--dry_run")
  cmds = _commands(out.stdout)
  assert [c[4] for c in cmds if c[:4] == ["gcloud", "storage", "buckets", "describe"]] == ["gs://b-runs"]
  srun = next(c for c in cmds if "srun" in c)
  assert "GOOGLE_APPLICATION_CREDENTIALS=/shared/key.json" in srun
  task = cmds[-1]
  assert "--workdir=gs://b-runs/r" in task and "--config.data.dir=gs://b-runs/data" in task
