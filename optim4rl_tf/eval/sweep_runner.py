"""Running a sweep's runs (:func:`optim4rl_tf.eval.sweep.expand`): one launcher process per run, on a local
process pool or Ray, with skipping of finished runs.

Both backends run the same function (:func:`_execute`) on the same commands; they differ only in where it
runs: a thread of this process (``backend='local'``) or a Ray task (``backend='ray'``, one CPU per run by
default), on a local Ray runtime started for the sweep or on a running cluster (``ray_address``). Skipping,
the files written and the progress lines are the same, so a sweep can be resumed with either backend. On
a cluster every node must see the sweep directory, the repository and the Python environment at the same
paths (a shared filesystem): the commands are the driver's, and a worker that cannot see its run's workdir
fails that run with a message naming the node.

Each run gets ``<sweep_dir>/<k>/`` as its workdir, holding ``sweep_run.json`` (index, configuration index,
repeat, seed, swept values, overrides, command, and the resolved config) before the launcher starts,
``log.txt`` (the launcher's output) and, when it exits with status 0, a ``done`` marker (``failed`` with the
exit status otherwise). A run whose workdir already holds ``done`` or a result file (``summary.json``) is
skipped. ``<sweep_dir>/sweep.json`` lists the whole expansion. Standard library only (no TensorFlow).
"""

import concurrent.futures
import json
import math
import os
import subprocess
import sys
import threading
import time
from typing import NamedTuple

from optim4rl_tf.eval import sweep
from optim4rl_tf.utils import workdir as workdir_lib

DONE_FILE = "done"
FAILED_FILE = "failed"
RUN_FILE = "sweep_run.json"
LOG_FILE = "log.txt"
RESULT_FILES = ("summary.json",)


def _write_json(path, obj):
  workdir_lib.atomic_write(path, json.dumps(obj, indent=2, default=str))


def is_done(workdir, result_files=RESULT_FILES):
  return any(os.path.exists(os.path.join(workdir, f)) for f in (DONE_FILE,) + tuple(result_files))


def _config_dict(config):
  return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def prepare(runs, cmd_fn, sweep_dir, meta=None, all_runs=None):
  """Writes ``<sweep_dir>/sweep.json`` (all runs of the sweep); returns {run index: command}."""
  os.makedirs(sweep_dir, exist_ok=True)
  all_runs = runs if all_runs is None else all_runs
  _write_json(
      os.path.join(sweep_dir, "sweep.json"),
      dict(meta or {},
           num_runs=len(all_runs),
           runs=[
               dict(index=r.index,
                    config_index=r.config_index,
                    repeat=r.repeat,
                    seed=r.seed,
                    values=r.values,
                    workdir=r.workdir) for r in all_runs
           ]))
  return {run.index: cmd_fn(run) for run in runs}


def _write_run_file(run, config, cmd):
  os.makedirs(run.workdir, exist_ok=True)
  resolved = sweep.apply_overrides(config, run.overrides)
  _write_json(
      os.path.join(run.workdir, RUN_FILE),
      dict(index=run.index,
           config_index=run.config_index,
           repeat=run.repeat,
           seed=run.seed,
           values=run.values,
           overrides=run.overrides,
           command=cmd,
           config=_config_dict(resolved)))


# Variables Ray sets in its worker processes; a run started by a Ray task gets the driver's value or none, as
# it would from the local pool (OMP_NUM_THREADS=1 would otherwise reach TensorFlow only under Ray).
_RAY_WORKER_VARS = ("OMP_NUM_THREADS", "PYTHONBREAKPOINT")


def _run_env(env, strip_ray=False):
  """The environment of a run: this process's, without Ray's worker variables when ``strip_ray``, plus
  ``env`` (the sweep's own variables)."""
  base = dict(os.environ)
  if strip_ray:
    base = {k: v for k, v in base.items() if not k.startswith("RAY_") and k not in _RAY_WORKER_VARS}
  base.update(env or {})
  return base


def _execute(cmd, workdir, env=None, cwd=None, timeout=None, strip_ray=False):
  """Runs one command, output to workdir/log.txt; writes done/failed. Returns (rc, seconds).

  ``env``: variables set on top of this process's environment (:func:`_run_env`)."""
  env = _run_env(env, strip_ray)
  t0 = time.time()
  with open(os.path.join(workdir, LOG_FILE), "a") as log:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    try:
      rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, timeout=timeout,
                          check=False).returncode
    except subprocess.TimeoutExpired:  # (subprocess.run has killed it)
      rc = 124
      log.write(f"\n[sweep] killed after the timeout of {timeout} s\n")
  secs = time.time() - t0
  info = dict(rc=rc, seconds=round(secs, 3), finished=time.strftime("%Y-%m-%d %H:%M:%S"))
  if rc == 0:
    _write_json(os.path.join(workdir, DONE_FILE), info)
    if os.path.exists(os.path.join(workdir, FAILED_FILE)):
      os.remove(os.path.join(workdir, FAILED_FILE))
  else:
    _write_json(os.path.join(workdir, FAILED_FILE), info)
  return rc, secs


def _tail(path, lines=5):
  try:
    with open(path) as f:
      return "".join(f.readlines()[-lines:]).rstrip()
  except OSError:
    return ""


class SweepResult(NamedTuple):
  ok: list  # run indices that finished now
  failed: list  # run indices that failed now
  skipped: list  # run indices skipped (results existed)


def run_sweep(runs,
              config,
              cmd_fn,
              sweep_dir,
              workers=1,
              backend="local",
              skip_existing=True,
              result_files=RESULT_FILES,
              env=None,
              cwd=None,
              timeout=None,
              stream=None,
              meta=None,
              ray_address=None,
              cpus_per_run=1,
              gpus_per_run=0,
              all_runs=None):
  """Runs ``runs`` (a list of :class:`Run`) and prints one progress line per run.

  Args:
    config: base config (for each run's resolved ``sweep_run.json``).
    cmd_fn: ``run -> command list`` (e.g. ``functools.partial(command, launcher=..., config_spec=...)``).
    workers: parallel runs of the local pool; with ``backend='ray'`` and no ``ray_address``, the local Ray
      runtime started for the sweep gets ``workers * cpus_per_run`` CPUs (so also ``workers`` runs at a time).
    backend: 'local' or 'ray'.
    skip_existing: skip runs whose workdir holds ``done`` or one of ``result_files``.
    env: environment variables set for each run, on top of the environment of the process that starts it.
    cwd, timeout: for each subprocess (timeout in seconds per run; None: none).
    ray_address: address of a running Ray cluster ('auto', or host:port of ``ray start --head``); None: a
      local Ray runtime for this sweep, shut down at its end. When Ray is already initialised in this process
      (``ray.init`` by the caller), that runtime is used and left running.
    cpus_per_run, gpus_per_run: Ray resources reserved per run (Ray sets CUDA_VISIBLE_DEVICES for GPUs).
    all_runs: every run of the sweep, for ``sweep.json`` when ``runs`` is a selection.
  Returns :class:`SweepResult`.
  """
  stream = stream or sys.stdout
  lock = threading.Lock()

  def say(msg):
    with lock:
      print(msg, file=stream, flush=True)

  cmds = prepare(runs, cmd_fn, sweep_dir, meta, all_runs)
  todo, skipped = [], []
  for run in runs:
    if skip_existing and is_done(run.workdir, result_files):
      skipped.append(run.index)
    else:
      todo.append(run)
  if skipped:
    say(f"[sweep] {len(skipped)} of {len(runs)} runs already have results, skipped: "
        f"{sweep.format_ranges(skipped)}")
  for run in todo:
    _write_run_file(run, config, cmds[run.index])
  say(f"[sweep] running {len(todo)} runs with backend={backend}" +
      (f", {workers} workers" if backend == "local" else ""))
  ok, failed, counter = [], [], [0]
  t_start = time.time()

  def report(run, rc, secs, error=None):
    """One progress line per run; a failure names its cell (run, configuration, repeat, values, seed) and
    shows the end of its log, or ``error`` when the run could not start (or its Ray task failed)."""
    with lock:
      counter[0] += 1
      n = counter[0]
      (ok if rc == 0 else failed).append(run.index)
    if rc == 0:
      status = "ok"
    elif error:
      status = f"FAILED ({error})"
    else:
      status = f"FAILED (rc={rc}), see {os.path.join(run.workdir, LOG_FILE)}"
    msg = f"[sweep {n}/{len(todo)}] {_cell(run)} {status} in {secs:.1f}s: {sweep.describe(run)}"
    if rc != 0 and not error:
      tail = _tail(os.path.join(run.workdir, LOG_FILE))
      if tail:
        msg += "\n    " + tail.replace("\n", "\n    ")
    say(msg)

  if backend == "local":
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
      futures = {pool.submit(_execute, cmds[r.index], r.workdir, env, cwd, timeout): r for r in todo}
      for fut in concurrent.futures.as_completed(futures):
        run = futures[fut]
        try:
          rc, secs = fut.result()
          report(run, rc, secs)
        except Exception as e:  # pylint: disable=broad-except
          report(run, -1, 0.0, error=f"could not start: {type(e).__name__}: {e}")
  elif backend == "ray":
    if todo:  # (no Ray runtime for a sweep with nothing left to run)
      _run_ray(todo, cmds, env, cwd, timeout, report, ray_address, cpus_per_run, gpus_per_run, workers)
  else:
    raise ValueError(f"unknown backend {backend!r}; valid: local, ray")
  say(f"[sweep] finished in {time.time() - t_start:.1f}s: {len(ok)} ok, {len(failed)} failed, "
      f"{len(skipped)} skipped" + (f"; failed runs: {sweep.format_ranges(sorted(failed))}" if failed else ""))
  by_index = {r.index: r for r in todo}
  for index in sorted(failed):
    say(f"    {_cell(by_index[index])}: {sweep.describe(by_index[index])}")
  return SweepResult(ok=sorted(ok), failed=sorted(failed), skipped=skipped)


def _cell(run):
  return f"run {run.index} (config {run.config_index}, repeat {run.repeat})"


def _execute_on_ray_worker(cmd, workdir, env, cwd, timeout):
  """:func:`_execute` inside a Ray task: the run gets the driver's variables rather than Ray's worker ones,
  and a node that does not see the sweep directory fails the run with a message naming it."""
  import socket  # pylint: disable=import-outside-toplevel
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"workdir {workdir} does not exist on node {socket.gethostname()}: the sweep "
                            "directory must be on a filesystem shared by all Ray nodes, at the same path")
  return _execute(cmd, workdir, env, cwd, timeout, strip_ray=True)


def _ray_error(exc):
  """The last line of a Ray task error (its message), without the traceback Ray wraps around it."""
  lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
  return f"{type(exc).__name__}: {lines[-1] if lines else exc}"


def _run_ray(todo, cmds, env, cwd, timeout, report, address, cpus_per_run, gpus_per_run, workers):
  """The same runs as Ray tasks, one per run. Ray schedules them on the cluster's free CPUs (GPUs); this
  driver waits for each and reports it as it finishes. Ctrl-C cancels the tasks that have not finished."""
  try:
    import ray  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise RuntimeError("--backend=ray needs the 'ray' package, which is not installed "
                       "(pip install 'optim4rl-tf[ray]' or the lock requirements.txt); the default "
                       "--backend=local needs nothing") from None
  started = not ray.is_initialized()
  if started:
    if address:
      ray.init(address=address, log_to_driver=False)
    else:
      ray.init(num_cpus=max(1, math.ceil(max(1, int(workers)) * cpus_per_run)),
               include_dashboard=False,
               log_to_driver=False)
  env = dict(env or {})
  for key in _RAY_WORKER_VARS:  # the driver's own value, if any, reaches the runs as with the local pool
    if key in os.environ:
      env.setdefault(key, os.environ[key])
  remote = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)(_execute_on_ray_worker)
  pending = {remote.remote(cmds[r.index], r.workdir, env, cwd, timeout): r for r in todo}
  try:
    while pending:
      done, _ = ray.wait(list(pending), num_returns=1)
      for ref in done:
        run = pending.pop(ref)
        try:
          rc, secs = ray.get(ref)
        except Exception as e:  # pylint: disable=broad-except   (the task itself failed: report, go on)
          error = f"Ray task failed: {_ray_error(e)}"
          try:
            _write_json(os.path.join(run.workdir, FAILED_FILE), dict(rc=-1, error=error))
          except OSError:
            pass
          report(run, -1, 0.0, error=error)
        else:
          report(run, rc, secs)
  finally:
    for ref in pending:  # interrupted: no run keeps going without its driver
      ray.cancel(ref, force=True)
    if started:
      ray.shutdown()
