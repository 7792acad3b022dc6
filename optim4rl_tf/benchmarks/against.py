"""Side-by-side timing of our benchmarks and a reference implementation's, on the same machine in one run.

``launch/benchmark.py meta|a2c --against=official`` and ``launch/benchmark.py ppo --against=brax`` call
:func:`compare`: N pairs (``--pairs``), each pair ours then theirs, every measurement in a fresh subprocess
(ours: ``launch/benchmark.py <name> --child=...``; theirs: the reference's timing script in its own venv),
each child printing one ``RESULT {json}`` line. Printed per measurement and overall: the figure (s/it or
env steps/s), peak RSS (``ru_maxrss`` of the child from ``os.wait4``, the same method for both sides), the
first outer iteration's seconds, compilation included, where the child reports them (MetaA2C),
the ratio theirs/ours as a speed-up of ours (their s/it / our s/it, or our steps/s / their steps/s), and
beside every figure the machine's load: ``os.getloadavg()`` before and after the measurement and the other
processes that were busy meanwhile (CPU time from ``/proc/<pid>/stat``). A ratio measured on a loaded
machine says little: the load columns are there to judge it.

Where the reference lives is the user's business (flags or environment variables; nothing is assumed):

* official Optim4RL (JAX): ``--official_dir`` / ``OPTIM4RL_OFFICIAL_DIR`` (the unpacked official code),
  ``--official_python`` / ``OPTIM4RL_OFFICIAL_PYTHON`` (its venv's python; default ``venv/bin/python``
  beside ``--official_dir``), ``--official_bench`` / ``OPTIM4RL_OFFICIAL_BENCH`` (its timing script,
  ``bench_optim4rl.py``);
* Brax's own PPO: ``--brax_python`` / ``OPTIM4RL_BRAX_PYTHON`` (default ``brax_venv/bin/python`` beside
  ``--official_dir`` when that is given), ``--brax_bench`` / ``OPTIM4RL_BRAX_BENCH``
  (``bench_brax_ppo.py``).
"""

import datetime
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFERENCES = ("official", "brax")
BUSY_CORES = 0.1  # a process that used at least this many cores on average during a measurement is "busy"


class SetupError(Exception):
  """The reference implementation cannot be run as given (one line naming the flag)."""


class Side(NamedTuple):
  """One side of a comparison: how to run it and how to read its ``RESULT`` json.

  figure(result) -> the compared number; lower_is_better: True for s/it, False for env steps/s."""
  name: str
  cmd: List[str]
  env: Dict[str, str]
  figure: Callable[[Dict[str, Any]], float]
  lower_is_better: bool
  cwd: Optional[str] = None


class ChildRun(NamedTuple):
  """A finished child process: exit status, output, wall seconds, peak RSS in GB (``ru_maxrss``) and CPU
  seconds (user + system)."""
  returncode: int
  stdout: str
  stderr: str
  wall_s: float
  peak_rss_gb: float
  cpu_s: float = 0.0


class Load(NamedTuple):
  """The machine's load around one measurement."""
  before: tuple  # os.getloadavg() before
  after: tuple  # and after
  busy: int  # other processes (visible in /proc) that used >= BUSY_CORES cores on average meanwhile
  others_cores: float  # cores used by everything but the measured child, averaged over the measurement
  top: str  # the busiest other processes, "name:cores" comma-separated


class Measurement(NamedTuple):
  side: str
  pair: int
  value: Optional[float]  # None: the child failed
  peak_rss_gb: float
  wall_s: float
  load: Load
  result: Dict[str, Any]
  error: str = ""


# ---------------------------------------------------------------------------------------------------------
# Where the reference is.


def _flag_or_env(value, env_name, environ):
  return value if value else environ.get(env_name, "")


def _check_file(path, flag, what, executable=False):
  if not path:
    raise SetupError(f"{flag} is not given: pass {flag}=PATH ({what})")
  if not os.path.isfile(path) or (executable and not os.access(path, os.X_OK)):
    raise SetupError(f"{flag}={path} not found ({what})")
  return os.path.abspath(path)


def resolve_official(args, environ=None):
  """(official_dir, python, bench) from the flags or environment; SetupError names the missing flag."""
  environ = os.environ if environ is None else environ
  d = _flag_or_env(args.official_dir, "OPTIM4RL_OFFICIAL_DIR", environ)
  if not d:
    raise SetupError("--official_dir is not given: pass --official_dir=DIR or set OPTIM4RL_OFFICIAL_DIR "
                     "(the unpacked official Optim4RL code)")
  if not os.path.isdir(d):
    raise SetupError(f"--official_dir={d} not found (the unpacked official Optim4RL code)")
  py = _flag_or_env(args.official_python, "OPTIM4RL_OFFICIAL_PYTHON", environ)
  py = py or os.path.join(os.path.dirname(os.path.abspath(d)), "venv", "bin", "python")
  py = _check_file(py, "--official_python", "the python of the official code's venv", executable=True)
  bench = _flag_or_env(args.official_bench, "OPTIM4RL_OFFICIAL_BENCH", environ)
  bench = _check_file(bench, "--official_bench", "the official code's timing script bench_optim4rl.py")
  return os.path.abspath(d), py, bench


def resolve_brax(args, environ=None):
  """(python, bench) of Brax's own PPO from the flags or environment; SetupError names the missing flag."""
  environ = os.environ if environ is None else environ
  py = _flag_or_env(args.brax_python, "OPTIM4RL_BRAX_PYTHON", environ)
  d = _flag_or_env(getattr(args, "official_dir", ""), "OPTIM4RL_OFFICIAL_DIR", environ)
  if not py and d:
    py = os.path.join(os.path.dirname(os.path.abspath(d)), "brax_venv", "bin", "python")
  py = _check_file(py, "--brax_python", "the python of a venv with brax", executable=True)
  bench = _flag_or_env(args.brax_bench, "OPTIM4RL_BRAX_BENCH", environ)
  bench = _check_file(bench, "--brax_bench", "Brax's PPO timing script bench_brax_ppo.py")
  return py, bench


def add_flags(parser, references):
  """The flags of a side-by-side comparison (``references``: the values --against accepts)."""
  parser.add_argument("--against",
                      default="",
                      choices=("",) + tuple(references),
                      help="time the reference implementation too, alternating with ours")
  parser.add_argument("--pairs", type=int, default=2, help="pairs (ours, theirs) measured back to back")
  parser.add_argument("--duration", type=float, default=45.0, help="steady-state seconds per measurement")
  parser.add_argument("--child_timeout", type=float, default=1800.0, help="seconds before a child is killed")
  parser.add_argument("--official_dir", default="", help="unpacked official code (or OPTIM4RL_OFFICIAL_DIR)")
  parser.add_argument("--official_python", default="", help="its venv's python (or OPTIM4RL_OFFICIAL_PYTHON)")
  parser.add_argument("--official_bench", default="", help="bench_optim4rl.py (or OPTIM4RL_OFFICIAL_BENCH)")
  if "brax" in references:
    parser.add_argument("--brax_python", default="", help="a venv's python with brax (or OPTIM4RL_BRAX_PYTHON)")
    parser.add_argument("--brax_bench", default="", help="bench_brax_ppo.py (or OPTIM4RL_BRAX_BENCH)")


def our_cmd(name, flags):
  """The command of one of our measurements: ``launch/benchmark.py <name> <flags>`` with this python."""
  return [sys.executable, os.path.join(ROOT, "launch", "benchmark.py"), name] + list(flags)


def official_side(args, agent, env_name, num_envs, figure, lower_is_better, extra=(), environ=None):
  """The official timing script (``--agent A2C|MetaA2C``) as a :class:`Side`."""
  d, py, bench = resolve_official(args, environ)
  env = child_env(environ)
  env["OPTIM4RL_DIR"] = d
  cmd = [
      py, bench, "--agent", agent, "--env", env_name, "--num_envs",
      str(num_envs), "--duration", f"{args.duration:g}"
  ]
  return Side("official", cmd + list(extra), env, figure, lower_is_better, cwd=d)


def child_env(environ=None):
  env = dict(os.environ if environ is None else environ)
  env.pop("LD_PRELOAD", None)  # ours sets its own allocator up; theirs gets none of ours
  return env


# ---------------------------------------------------------------------------------------------------------
# Measuring.


def parse_result(stdout):
  """The json of the last ``RESULT {json}`` line of a child's output, or None."""
  for line in reversed(stdout.splitlines()):
    if line.startswith("RESULT "):
      try:
        return json.loads(line[len("RESULT "):])
      except ValueError:
        return None
  return None


def run_child(cmd, env=None, cwd=None, timeout=None):
  """Runs ``cmd`` to the end; its peak RSS comes from ``os.wait4`` (this child only, not its siblings)."""
  with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd, start_new_session=True)
    status, usage = None, None
    while status is None:
      pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
      if pid == proc.pid:
        status, usage = st, ru
      elif timeout is not None and time.time() - t0 > timeout:
        os.killpg(proc.pid, signal.SIGKILL)  # the child's own session: it and what it started
        _, status, usage = os.wait4(proc.pid, 0)
      else:
        time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - t0
    out.seek(0)
    err.seek(0)
    cpu = usage.ru_utime + usage.ru_stime
    return ChildRun(proc.returncode, out.read(), err.read(), wall, usage.ru_maxrss / 1e6, cpu)


def cpu_snapshot():
  """{pid: (name, CPU seconds so far, start time)} of every process readable in /proc (empty where there is
  none)."""
  snap = {}
  tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
  try:
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
  except OSError:
    return snap
  for p in pids:
    try:
      with open(f"/proc/{p}/stat") as f:
        text = f.read()
    except OSError:
      continue
    name = text[text.find("(") + 1:text.rfind(")")]
    fields = text[text.rfind(")") + 2:].split()
    # (comm, utime + stime, start time): the start time tells a reused pid from the same process (comm of
    # kernel workers changes with their work item).
    snap[int(p)] = (name, (int(fields[11]) + int(fields[12])) / tick, int(fields[19]))
  return snap


def machine_cpu_seconds():
  """Busy CPU seconds of the whole machine so far (/proc/stat: all but idle and iowait), or None."""
  try:
    with open("/proc/stat") as f:
      fields = [int(x) for x in f.readline().split()[1:]]
  except (OSError, ValueError):
    return None
  tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
  return (sum(fields[:8]) - fields[3] - (fields[4] if len(fields) > 4 else 0)) / tick


def own_cpu_seconds():
  """CPU seconds (user + system) this process has used so far."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def busy_others(before, after, seconds, exclude=()):
  """(busy processes, cores they used, "name:cores" of the busiest 3) between two snapshots: processes
  alive at the end, those started meanwhile included (all their CPU time counts). The measured child has
  been reaped before ``after`` is taken, so it is never among them."""
  seconds = max(seconds, 1e-6)
  used = []
  for pid, now in after.items():
    if pid in exclude:
      continue
    name, t1 = now[0], now[1]
    then = before.get(pid)
    same = then is not None and (then[2:] == now[2:] if len(now) > 2 else then[0] == name)
    t0 = then[1] if same else 0.0
    cores = max(0.0, t1 - t0) / seconds
    if cores > 0:
      used.append((cores, name))
  used.sort(reverse=True)
  top = ",".join(f"{n}:{c:.1f}" for c, n in used[:3] if c >= BUSY_CORES)
  return sum(1 for c, _ in used if c >= BUSY_CORES), sum(c for c, _ in used), top


def measure(side,
            pair,
            runner=run_child,
            loadavg=os.getloadavg,
            snapshot=cpu_snapshot,
            machine_cpu=machine_cpu_seconds,
            timeout=None,
            clock=time.time):
  """One measurement of ``side`` in its own subprocess, with the machine's load around it. The cores used
  by others are the machine's busy CPU time (/proc/stat) minus the child's, per second of the measurement
  (short-lived processes included); without /proc/stat, the sum over the processes seen at the end."""
  before_avg, before_cpu, before_total = loadavg(), snapshot(), machine_cpu()
  t0 = clock()
  run = runner(side.cmd, env=side.env, cwd=side.cwd, timeout=timeout)
  seconds = clock() - t0
  after_total, after_cpu, after_avg = machine_cpu(), snapshot(), loadavg()
  busy, cores, top = busy_others(before_cpu, after_cpu, seconds, exclude={os.getpid()})
  if before_total is not None and after_total is not None:
    cores = max(0.0, (after_total - before_total - run.cpu_s) / max(seconds, 1e-6))
  load = Load(tuple(before_avg), tuple(after_avg), busy, cores, top)
  result = parse_result(run.stdout)
  value, error = None, ""
  if run.returncode != 0 or result is None:
    tail = (run.stderr.strip().splitlines() or run.stdout.strip().splitlines() or ["no output"])[-1]
    error = f"exit {run.returncode}, no RESULT line: {tail}" if result is None else f"exit {run.returncode}"
    if timeout is not None and run.returncode == -signal.SIGKILL and seconds >= timeout:
      error = f"killed after --child_timeout={timeout:g} s; " + error
  else:
    try:
      value = float(side.figure(result))
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
      error = f"RESULT without the figure ({type(e).__name__}: {e})"
  return Measurement(side.name, pair, value, run.peak_rss_gb, run.wall_s, load, result or {}, error)


def pair_order(num_pairs):
  """(pair, side index) in measuring order: ours then theirs, pair after pair."""
  return [(p, s) for p in range(num_pairs) for s in (0, 1)]


def speedup(ours, theirs, lower_is_better):
  """How many times faster ours is: their s/it / our s/it, or our steps/s / their steps/s (None if unknown)."""
  if ours is None or theirs is None or ours <= 0 or theirs <= 0:
    return None
  return theirs / ours if lower_is_better else ours / theirs


def run_pairs(ours,
              theirs,
              num_pairs,
              runner=run_child,
              loadavg=os.getloadavg,
              snapshot=cpu_snapshot,
              machine_cpu=machine_cpu_seconds,
              timeout=None,
              echo=None):
  """All measurements (:func:`pair_order`); ``echo(measurement)`` after each one."""
  sides = (ours, theirs)
  out = []
  for p, s in pair_order(num_pairs):
    m = measure(sides[s],
                p,
                runner=runner,
                loadavg=loadavg,
                snapshot=snapshot,
                machine_cpu=machine_cpu,
                timeout=timeout)
    out.append(m)
    if echo is not None:
      echo(m)
  return out


# ---------------------------------------------------------------------------------------------------------
# Printing.


def commit_of(root=ROOT):
  """Short commit of the checkout, "+dirty" when tracked files differ from it ("unknown" without git)."""
  try:
    head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                          capture_output=True,
                          text=True,
                          timeout=30).stdout.strip()
    dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True,
                           text=True,
                           timeout=30).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return "unknown"
  return (head + ("+dirty" if dirty else "")) if head else "unknown"


def _fmt_load(load):
  avg = lambda a: "/".join(f"{x:.2f}" for x in a[:1])  # the 1-minute average
  top = f" [{load.top}]" if load.top else ""
  return (f"load {avg(load.before)}->{avg(load.after)}, others used {load.others_cores:.1f} cores, "
          f"{load.busy} other busy{top}")


def format_value(value, unit):
  if value is None:
    return "failed"
  return f"{value:.3f} {unit}" if unit == "s/it" else f"{value:,.0f} {unit}"


# Where each side's RESULT json gives the seconds of its first outer iteration (compilation included): ours
# (launch/benchmark.py meta --child) and the official bench_optim4rl.py.
FIRST_ITERATION_KEYS = ("first_it_secs", "first_iter_s")


def first_iteration_seconds(result):
  """The first outer iteration's seconds (compilation included) from a RESULT json, or None."""
  for key in FIRST_ITERATION_KEYS:
    if isinstance((result or {}).get(key), (int, float)):
      return float(result[key])
  return None


def format_measurement(m, unit):
  text = f"  pair {m.pair + 1} {m.side:9s} {format_value(m.value, unit):>20s}  peak RSS {m.peak_rss_gb:5.2f} GB  "
  first = first_iteration_seconds(m.result)
  text += f"wall {m.wall_s:5.0f} s  " + ("" if first is None else f"1st it {first:5.1f} s  ") + _fmt_load(m.load)
  return text + (f"  ERROR {m.error}" if m.error else "")


def summary_lines(measurements, theirs_name, unit, lower_is_better):
  """Per-pair ratios and the overall figures (medians over pairs) with the load beside each."""
  lines = []
  pairs = sorted({m.pair for m in measurements})
  ratios = []
  for p in pairs:
    ours = [m for m in measurements if m.pair == p and m.side == "ours"]
    theirs = [m for m in measurements if m.pair == p and m.side == theirs_name]
    if not ours or not theirs:
      continue
    r = speedup(ours[0].value, theirs[0].value, lower_is_better)
    if r is not None:
      ratios.append(r)
    worst = max(ours[0].load.after[0], ours[0].load.before[0], theirs[0].load.after[0], theirs[0].load.before[0])
    lines.append(f"  pair {p + 1}: {theirs_name}/ours = {'n/a' if r is None else f'{r:.2f}x'}  (ours "
                 f"{format_value(ours[0].value, unit)}, {theirs_name} {format_value(theirs[0].value, unit)}; "
                 f"1-min load up to {worst:.2f})")
  for side in ("ours", theirs_name):
    ms = [m for m in measurements if m.side == side]
    vals = [m.value for m in ms if m.value is not None]
    if not ms:
      continue
    loads = [x for m in ms for x in (m.load.before[0], m.load.after[0])]
    busy = [m.load.busy for m in ms]
    cores = [m.load.others_cores for m in ms]
    firsts = [f for f in (first_iteration_seconds(m.result) for m in ms) if f is not None]
    first = f"1st it {statistics.median(firsts):5.1f} s (compile included)  " if firsts else ""
    lines.append(f"  overall {side:9s} {format_value(statistics.median(vals) if vals else None, unit):>20s} "
                 f"(median of {len(vals)}/{len(ms)})  peak RSS {max(m.peak_rss_gb for m in ms):5.2f} GB  {first}"
                 f"1-min load {min(loads):.2f}-{max(loads):.2f}, others used {min(cores):.1f}-{max(cores):.1f} "
                 f"cores, other busy {min(busy)}-{max(busy)}")
  if ratios:
    lines.append(f"  overall {theirs_name}/ours = {statistics.median(ratios):.2f}x (median of {len(ratios)} pair "
                 f"ratios; >1: ours faster){'' if lower_is_better else ' [env steps/s ratio ours/theirs]'}")
  else:
    lines.append(f"  overall {theirs_name}/ours = n/a (no pair finished on both sides)")
  return lines


def header_lines(title, ours, theirs, num_pairs):
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
  return [
      f"{title}",
      f"  {now}; ours at commit {commit_of()}; {os.cpu_count()} CPUs; {num_pairs} pair(s), each ours then "
      f"{theirs.name}, each in its own process",
      f"  ours:   {' '.join(ours.cmd[1:])}",
      f"  {theirs.name + ':':7s} {' '.join(theirs.cmd)}",
      "  load = os.getloadavg() 1-min before->after; others used = the machine's busy CPU (/proc/stat) minus "
      f"the child's; other busy = processes in /proc using >= {BUSY_CORES} cores meanwhile; a ratio under load "
      "is not a speed result",
  ]


def compare(title,
            ours,
            theirs,
            num_pairs,
            unit,
            runner=run_child,
            loadavg=os.getloadavg,
            snapshot=cpu_snapshot,
            machine_cpu=machine_cpu_seconds,
            timeout=None,
            printer=print,
            json_out=""):
  """Measures and prints everything; returns the measurements (0 pairs: none)."""
  if num_pairs < 1:
    raise SetupError(f"--pairs={num_pairs} must be at least 1")
  for line in header_lines(title, ours, theirs, num_pairs):
    printer(line)
  ms = run_pairs(ours,
                 theirs,
                 num_pairs,
                 runner=runner,
                 loadavg=loadavg,
                 snapshot=snapshot,
                 machine_cpu=machine_cpu,
                 timeout=timeout,
                 echo=lambda m: printer(format_measurement(m, unit)))
  for line in summary_lines(ms, theirs.name, unit, ours.lower_is_better):
    printer(line)
  if json_out:
    with open(json_out, "w") as f:
      json.dump([m._asdict() | {"load": m.load._asdict()} for m in ms], f, indent=1)
  return ms


def main_guard(fn):
  """Runs ``fn()``; a :class:`SetupError` becomes one line on stderr and exit status 2."""
  try:
    fn()
  except SetupError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0
