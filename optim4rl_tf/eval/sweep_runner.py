"""Running a sweep's runs (:func:`optim4rl_tf.eval.sweep.expand`): one launcher process per run, on a local
process pool or Ray, with skipping of finished runs.

Each run gets ``<sweep_dir>/<k>/`` as its workdir, holding ``sweep_run.json`` (index, configuration index,
repeat, seed, swept values, overrides, command, and the resolved config) before the launcher starts,
``log.txt`` (the launcher's output) and, when it exits with status 0, a ``done`` marker (``failed`` with the
exit status otherwise). A run whose workdir already holds ``done`` or a result file (``summary.json``) is
skipped. ``<sweep_dir>/sweep.json`` lists the whole expansion. Standard library only (no TensorFlow).
"""

import concurrent.futures
import json
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


def _execute(cmd, workdir, env=None, cwd=None, timeout=None):
  """Runs one command, output to workdir/log.txt; writes done/failed. Returns (rc, seconds)."""
  t0 = time.time()
  with open(os.path.join(workdir, LOG_FILE), "a") as log:
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    try:
      rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, timeout=timeout,
                          check=False).returncode
    except subprocess.TimeoutExpired:
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
              all_runs=None):
  """Runs ``runs`` (a list of :class:`Run`) and prints one progress line per run.

  Args:
    config: base config (for each run's resolved ``sweep_run.json``).
    cmd_fn: ``run -> command list`` (e.g. ``functools.partial(command, launcher=..., config_spec=...)``).
    workers: parallel runs of the local pool.
    backend: 'local' or 'ray'.
    skip_existing: skip runs whose workdir holds ``done`` or one of ``result_files``.
    env, cwd, timeout: for each subprocess (timeout in seconds per run; None: none).
    ray_address: Ray cluster address (None: start/join a local Ray); cpus_per_run: Ray resources per run.
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

  def report(run, rc, secs):
    with lock:
      counter[0] += 1
      n = counter[0]
      (ok if rc == 0 else failed).append(run.index)
    status = "ok" if rc == 0 else f"FAILED (rc={rc}), see {os.path.join(run.workdir, LOG_FILE)}"
    msg = (f"[sweep {n}/{len(todo)}] run {run.index} (config {run.config_index}, repeat {run.repeat}) "
           f"{status} in {secs:.1f}s: {sweep.describe(run)}")
    if rc != 0:
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
        except Exception as e:  # pylint: disable=broad-except
          rc, secs = -1, 0.0
          say(f"[sweep] run {run.index}: could not start: {e}")
        report(run, rc, secs)
  elif backend == "ray":
    _run_ray(todo, cmds, env, cwd, timeout, report, ray_address, cpus_per_run)
  else:
    raise ValueError(f"unknown backend {backend!r}; valid: local, ray")
  say(f"[sweep] finished in {time.time() - t_start:.1f}s: {len(ok)} ok, {len(failed)} failed, "
      f"{len(skipped)} skipped" + (f"; failed runs: {sweep.format_ranges(sorted(failed))}" if failed else ""))
  return SweepResult(ok=sorted(ok), failed=sorted(failed), skipped=skipped)


def _run_ray(todo, cmds, env, cwd, timeout, report, address, cpus_per_run):
  """The same runs as Ray tasks (one task per run; workdirs must be on a filesystem the workers share)."""
  try:
    import ray  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise RuntimeError("--backend=ray needs the 'ray' package, which is not installed "
                       "(pip install 'ray[default]'); the default --backend=local needs nothing") from None
  if not ray.is_initialized():
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
  remote = ray.remote(num_cpus=cpus_per_run)(_execute)
  pending = {remote.remote(cmds[r.index], r.workdir, env, cwd, timeout): r for r in todo}
  while pending:
    done, _ = ray.wait(list(pending), num_returns=1)
    for ref in done:
      run = pending.pop(ref)
      try:
        rc, secs = ray.get(ref)
      except Exception:  # pylint: disable=broad-except
        rc, secs = -1, 0.0
      report(run, rc, secs)
