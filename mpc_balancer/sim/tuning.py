"""Tuning a controller's settings with Optuna: a study over (trace, seed) pairs, two objectives.

One *trial* is one setting of the searched options (a :class:`SearchSpace`), evaluated in closed
loop on every (trace, seed) pair of the study (in parallel). Its figures are the means over the
pairs of

* ``return_pct``: revenue as a percentage of the hindsight limit's on the same traffic, requests
  and plant (maximise), and
* ``nu``: the worst cluster's over-utilisation (minimise),

which make a Pareto front, or, with a :class:`Constraint` such as ``nu<=0.003``, one objective
under a constraint. The hindsight limit's revenue of each (trace, seed, days) is computed once and
kept in the study (user attribute ``hindsight/TRACE/SEED/DAYS``).

Everything a worker needs lives in the study's storage (:class:`StudySpec`, as user attributes), so
any number of :class:`Runner` processes, on any number of machines sharing an RDB storage, run the
trials of one study: queued trials first; with heartbeats (RDB storages) the trial of a worker that
died is failed by another worker and queued again with the same parameters; a study never runs
more than ``trials`` trials (a trial asked beyond them is pruned before it runs anything).

How a run is evaluated is passed in (``evaluate``, a picklable function, see
:class:`Runner`): the command line evaluates each pair as a ``simulate`` run of the study's base
configuration, so every option of ``simulate`` is available to a study.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import ConfigError, controller_defaults, dumps, read_toml
from .config import check_section

METRICS = {"return_pct": "maximize", "nu": "minimize"}
PARAM_TYPES = ("int", "float", "categorical")
SAMPLERS = ("tpe", "nsga2", "random", "grid")


# ---------------------------------------------------------------------------------------------
# the search space
@dataclass(frozen=True)
class Param:
    """One searched option ``SECTION.KEY``: an int or float range (``log``, ``step``) or choices."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    @property
    def section(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def key(self) -> str:
        return self.name.split(".", 1)[1]

    def suggest(self, trial):
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))

    def grid_values(self) -> list:
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            if self.log:
                raise ConfigError(f"{self.name}: a log int range has no grid; list the values as choices")
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise ConfigError(f"{self.name}: a float range needs a step (or choices) for --grid")
        n = int(round((self.high - self.low) / self.step))
        return [self.low + i * self.step for i in range(n + 1)]

    def contains(self, value) -> bool:
        if self.type == "categorical":
            return value in self.choices
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not self.low <= value <= self.high:
            return False
        if self.type == "int" and int(value) != value:
            return False
        if self.step is not None:
            k = (value - self.low) / self.step
            return abs(k - round(k)) < 1e-9
        return True


@dataclass(frozen=True)
class SearchSpace:
    """The searched options, one table per ``SECTION.KEY`` in ``space.toml``::

        [mpc.horizon]
        type = "int"          # int | float | categorical
        low = 10
        high = 120
        [mpc.rate_weight]
        type = "float"
        low = 0.01
        high = 10.0
        log = true
        [mpc.curve_every]
        type = "categorical"
        choices = [1, 3, 6, 10]

    ``step`` (int, float) spaces a range; ``log`` samples it in log scale.
    """

    params: tuple[Param, ...]

    @classmethod
    def from_toml(cls, path: str | Path) -> SearchSpace:
        return cls.from_dict(read_toml(path), str(path))

    @classmethod
    def from_dict(cls, tables: dict, source: str = "search space") -> SearchSpace:
        params = []
        for section, keys in tables.items():
            if not isinstance(keys, dict) or not all(isinstance(v, dict) for v in keys.values()):
                raise ConfigError(f"{source}: [{section}] must hold one table per option, e.g. [{section}.KEY] with type = ...")
            for key, spec in keys.items():
                params.append(_param(f"{section}.{key}", spec, source))
        if not params:
            raise ConfigError(f"{source}: the search space is empty")
        return cls(tuple(params))

    def to_dict(self) -> dict:
        out: dict = {}
        for p in self.params:
            d = {"type": p.type}
            if p.type == "categorical":
                d["choices"] = list(p.choices)
            else:
                d.update(low=p.low, high=p.high)
                if p.log:
                    d["log"] = True
                if p.step is not None:
                    d["step"] = p.step
            out.setdefault(p.section, {})[p.key] = d
        return out

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def check(self, controller: str, source: str) -> SearchSpace:
        """Every option must be one of ``controller``'s and every value of the space a valid one."""
        for p in self.params:
            if p.section != controller:
                raise ConfigError(f"{source}: {p.name}: a study searches options of the tuned controller "
                                  f"({controller}.KEY), not [{p.section}]")
            probe = list(p.choices) if p.type == "categorical" else [p.low, p.high]
            for v in probe:
                check_section(controller, {p.key: int(v) if p.type == "int" else v}, source)
        return self

    def suggest(self, trial) -> dict:
        return {p.name: p.suggest(trial) for p in self.params}

    def grid(self) -> dict[str, list]:
        return {p.name: p.grid_values() for p in self.params}

    def defaults(self, controller: str) -> dict | None:
        """The controller's default values of the searched options, or None if one lies outside the space."""
        d = controller_defaults(controller)
        vals = {p.name: d[p.key] for p in self.params}
        return vals if all(p.contains(vals[p.name]) for p in self.params) else None


def _param(name: str, spec: dict, source: str) -> Param:
    allowed = {"type", "low", "high", "log", "step", "choices"}
    bad = set(spec) - allowed
    if bad:
        raise ConfigError(f"{source}: unknown key {name}.{sorted(bad)[0]} (keys: {', '.join(sorted(allowed))})")
    kind = spec.get("type")
    if kind not in PARAM_TYPES:
        raise ConfigError(f"{source}: {name}.type must be one of {', '.join(PARAM_TYPES)}, got {kind!r}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices or set(spec) - {"type", "choices"}:
            raise ConfigError(f"{source}: {name}: a categorical option takes only a non-empty choices = [...], got {spec!r}")
        if len({json.dumps(c) for c in choices}) != len(choices):
            raise ConfigError(f"{source}: {name}.choices has duplicates: {choices!r}")
        return Param(name, kind, choices=tuple(choices))
    if "choices" in spec:
        raise ConfigError(f"{source}: {name}: choices belong to type = \"categorical\"")
    num = int if kind == "int" else (int, float)
    for k in ("low", "high"):
        v = spec.get(k)
        if isinstance(v, bool) or not isinstance(v, num) or not math.isfinite(v):
            raise ConfigError(f"{source}: {name}.{k} must be a finite {'integer' if kind == 'int' else 'number'}, got {v!r}")
    low, high = spec["low"], spec["high"]
    if not low < high:
        raise ConfigError(f"{source}: {name}: low must be < high, got low = {low!r}, high = {high!r}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{source}: {name}.log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{source}: {name}: a log range needs low > 0, got {low!r}")
    step = spec.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, num) or not step > 0):
        raise ConfigError(f"{source}: {name}.step must be > 0, got {step!r}")
    if step is not None and log:
        raise ConfigError(f"{source}: {name}: step and log cannot be combined")
    return Param(name, kind, low=float(low) if kind == "float" else int(low), high=float(high) if kind == "float" else int(high),
                 log=log, step=step)


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Constraint:
    """``METRIC<=BOUND`` or ``METRIC>=BOUND`` on one of :data:`METRICS`; the study then optimises the other."""

    metric: str
    op: str
    bound: float

    @classmethod
    def parse(cls, text: str) -> Constraint:
        m = re.fullmatch(r"\s*([a-z_]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*", text or "")
        if not m or m.group(1) not in METRICS:
            raise ConfigError(f"--constraint must be METRIC<=X or METRIC>=X with METRIC in {', '.join(METRICS)}, got {text!r}")
        try:
            bound = float(m.group(3))
        except ValueError:
            raise ConfigError(f"--constraint bound must be a number, got {m.group(3)!r}") from None
        return cls(m.group(1), m.group(2), bound)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"

    def violation(self, values: dict) -> float:
        """<= 0 when satisfied (Optuna's convention for ``constraints_func``)."""
        v = values[self.metric]
        return v - self.bound if self.op == "<=" else self.bound - v


@dataclass
class StudySpec:
    """What a study is: the tuned controller, its space, the pairs, the base configuration and the
    objectives. Stored in the study so that workers need only its storage and name."""

    controller: str
    space: dict
    traces: list[str]
    seeds: list[int]
    days: float
    base: dict = field(default_factory=dict)  # the trials' base configuration (TOML tables)
    constraint: str | None = None
    sampler: str = "tpe"
    sampler_seed: int = 0
    population: int | None = None  # NSGA-II population size
    baseline: bool = True  # queue the controller's defaults as the first trial
    trials: int = 20

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if not self.traces or not self.seeds:
            raise ConfigError("a study needs at least one trace and one seed")
        bad = [s for s in self.seeds if not 0 <= s < 2 ** 32]
        if bad:  # else every trial's run fails to parse --seed, after the study is created
            raise ConfigError(f"--seeds must be integers in [0, 2**32), got {', '.join(map(str, bad))}")
        for opt, vals in (("--traces", self.traces), ("--seeds", self.seeds)):
            repeated = sorted({str(v) for v in vals if list(vals).count(v) > 1})
            if repeated:  # a repeated (trace, seed) pair would weigh twice in every trial's means
                raise ConfigError(f"{opt} must not repeat a value, got {', '.join(repeated)} more than once")
        if not 0 <= self.sampler_seed < 2 ** 32:
            raise ConfigError(f"--sampler-seed must be an integer in [0, 2**32), got {self.sampler_seed}")
        if not (isinstance(self.trials, int) and self.trials >= 1):
            raise ConfigError(f"--trials must be an integer >= 1, got {self.trials!r}")
        if self.constraint is not None:
            Constraint.parse(self.constraint)
        if self.sampler == "grid" and self.trials != len(self.grid_points()):
            self.trials = len(self.grid_points())

    @property
    def search_space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.space)

    @property
    def pairs(self) -> list[tuple[str, int]]:
        return [(t, s) for t in self.traces for s in self.seeds]

    @property
    def objective_names(self) -> list[str]:
        if self.constraint is None:
            return list(METRICS)
        c = Constraint.parse(self.constraint)
        return [m for m in METRICS if m != c.metric]

    @property
    def directions(self) -> list[str]:
        return [METRICS[m] for m in self.objective_names]

    def grid_points(self) -> list[dict]:
        grid = self.search_space.grid()
        points = [{}]
        for name, values in grid.items():
            points = [{**p, name: v} for p in points for v in values]
        return points

    def identity(self) -> str:
        """A digest of everything that defines the study's figures (not the number of trials)."""
        d = asdict(self)
        d.pop("trials")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StudySpec:
        d = json.loads(text)
        return cls(**d)

    def sampler_object(self):
        import optuna

        c = Constraint.parse(self.constraint) if self.constraint else None
        cf = None if c is None else _constraints_func
        if self.sampler == "grid":
            return _queued_grid_sampler(self.search_space.grid(), seed=self.sampler_seed)
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=self.sampler_seed)
        if self.sampler == "nsga2":
            pop = self.population or max(4, min(50, self.trials // 4))
            return optuna.samplers.NSGAIISampler(population_size=pop, seed=self.sampler_seed, constraints_func=cf)
        return optuna.samplers.TPESampler(seed=self.sampler_seed, constraints_func=cf,
                                          n_startup_trials=max(1, min(10, self.trials // 3)))


def _constraints_func(trial) -> list[float]:
    """Optuna's constraint values (<= 0 feasible), stored by the objective in ``user_attrs``."""
    v = trial.user_attrs.get("violation")
    return [1.0 if v is None else float(v)]


# ---------------------------------------------------------------------------------------------
# storage and the study
def open_storage(url: str, heartbeat_s: int = 60):
    """An Optuna storage: an RDB URL (``sqlite:///...``, ``postgresql://...``; with heartbeats every
    ``heartbeat_s`` seconds, a trial silent for ``3 x heartbeat_s`` is failed and queued again) or
    the path of a journal file (one ``tune`` process at a time)."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if "://" in url:
        url = _with_driver(url)
        kwargs = {"pool_pre_ping": True} if url.startswith(("postgresql", "mysql")) else {}
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=int(heartbeat_s),
                                  grace_period=3 * int(heartbeat_s),
                                  heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
            except ImportError:
                raise ConfigError(f"--storage {_masked(url)}: no database driver for it; for PostgreSQL: "
                                  "pip install 'mpc-balancer[tune]' (psycopg2-binary)") from None
            except Exception as e:  # noqa: BLE001 - sqlalchemy's connection errors: one line, password masked
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise ConfigError(f"--storage {_masked(url)}: {msg}") from None
    path = Path(url)
    if path.is_dir():  # else IsADirectoryError from deep inside Optuna's journal backend
        raise ConfigError(f"--storage {url}: is a directory; give a journal file (e.g. {path / 'study.journal'}) "
                          "or an RDB URL (sqlite:///F, postgresql://...)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(url)))
    except OSError as e:
        raise ConfigError(f"--storage {url}: cannot open the journal file ({e.strerror or e})") from None


def _with_driver(url: str) -> str:
    """``postgresql://`` with the installed driver: SQLAlchemy 2.1 takes psycopg 3 for a bare
    ``postgresql://``, 2.0 psycopg2; the ``tune`` extra installs psycopg2."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def _masked(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)  # never print a password


def is_shared(storage) -> bool:
    """RDB storages are shared by workers (heartbeats); a journal file belongs to one process."""
    from optuna.storages import RDBStorage

    return isinstance(storage, RDBStorage)


SPEC_ATTR = "mpc_balancer_spec"


class _NoInterruptTraceback(logging.Filter):
    """Drop Optuna's log records about a trial stopped by Ctrl-C.

    Optuna logs every failed trial as a warning with the exception's traceback; for a
    ``KeyboardInterrupt`` that is a 40-line traceback from wherever the run was (numpy, scipy)
    above the CLI's own ``interrupted``, although nothing went wrong: the trial is queued again on
    the next run. Records of trials that failed with an error are kept.
    """

    def __init__(self):
        super().__init__()
        self.interrupted = False  # a KeyboardInterrupt record was dropped: its follow-up line is dropped too

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, KeyboardInterrupt):
            self.interrupted = True
            return False
        # the follow-up "Trial N failed with value None." of the same interrupted trial
        return not (self.interrupted and "failed with value None" in record.getMessage())


def _quiet_interrupts() -> None:
    """Install :class:`_NoInterruptTraceback` on the handlers of Optuna's library logger (a filter on
    the logger itself does not see the records its child loggers propagate)."""
    for h in logging.getLogger("optuna").handlers:
        if not any(isinstance(f, _NoInterruptTraceback) for f in h.filters):
            h.addFilter(_NoInterruptTraceback())


def _queued_grid_sampler(search_space: dict, seed: int | None = None):
    """Optuna's grid sampler for a study whose grid points are all queued (:func:`create_study`);
    the class is defined here, at the first call: Optuna is an optional dependency.

    Optuna's ``after_trial`` stops the study when one grid point is left and reads the trial's
    ``grid_id``, which a queued (``enqueue_trial``) trial never has: a grid of one point (``--horizons
    5``, or a space of one choice under ``--grid``) failed with ``KeyError: 'grid_id'``. The
    :class:`Runner` counts the trials itself, so nothing here needs to stop the study.
    """
    import optuna

    class QueuedGridSampler(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            return None

    return QueuedGridSampler(search_space, seed=seed)


def create_study(spec: StudySpec, storage, name: str):
    """Create the study (queueing the grid, or the controller's defaults as a baseline) or load it.

    A study of that name made with other settings is an error; the number of trials is updated."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _quiet_interrupts()
    try:
        study = optuna.load_study(study_name=name, storage=storage, sampler=spec.sampler_object())
    except KeyError:
        study = None
    if study is not None:
        old = load_spec(study)
        if old.identity() != spec.identity():
            a, b = asdict(old), asdict(spec)
            diff = sorted(k for k in a if k != "trials" and a[k] != b[k])
            raise ConfigError(f"study {name!r} in {storage_label(storage)} was made with other settings "
                              f"({', '.join(diff)} differ); use another --study or --out")
        if old.trials != spec.trials:
            study.set_user_attr(SPEC_ATTR, spec.to_json())
        return study
    study = optuna.create_study(study_name=name, storage=storage, directions=spec.directions,
                                sampler=spec.sampler_object(), load_if_exists=True)
    study.set_user_attr(SPEC_ATTR, spec.to_json())
    if spec.sampler == "grid":
        for p in spec.grid_points():
            study.enqueue_trial(p, user_attrs={"queued": True})
    elif spec.baseline:
        d = spec.search_space.defaults(spec.controller)
        if d is not None:
            study.enqueue_trial(d, user_attrs={"queued": True, "baseline": True})
    return study


def check_existing_study(url: str, name: str) -> None:
    """For a worker, which joins a study and never creates one: a SQLite ``url`` must name an
    existing database file that holds the study ``name``, read without writing (opening the
    storage would create the file, or Optuna's tables in another SQLite file, before
    :func:`load_study` finds no study). Raises :class:`ConfigError` naming the study and the storage.
    Other URLs are left to :func:`load_study`."""
    if not url.startswith("sqlite"):
        return
    import sqlite3

    from sqlalchemy.engine import make_url

    try:
        db = make_url(url).database
    except Exception:  # noqa: BLE001 - a malformed URL: open_storage names it
        return
    where = f"no study {name!r} in {_masked(url)}"
    hint = f"create it with `mpc-balancer tune --storage {_masked(url)} --study {name} ...` first"
    if not db or db == ":memory:":
        raise ConfigError(f"{where}: an in-memory SQLite database holds no study; {hint}")
    if db.startswith("file:"):  # a SQLite URI (uri=true): left to Optuna
        return
    path = Path(db)
    if not path.is_file():
        raise ConfigError(f"{where}: the database file {path} does not exist; {hint}")
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            found = con.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchone()
        finally:
            con.close()
    except sqlite3.Error as e:
        raise ConfigError(f"{where}: {path} holds no Optuna study ({e}); {hint}") from None
    if found is None:
        raise ConfigError(f"{where}; {hint}")


def load_study(storage, name: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _quiet_interrupts()
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise ConfigError(f"no study {name!r} in {storage_label(storage)}; create it with `mpc-balancer tune --storage ... --study "
                          f"{name}`") from None
    spec = load_spec(study)
    return optuna.load_study(study_name=name, storage=storage, sampler=spec.sampler_object())


def load_spec(study) -> StudySpec:
    text = study.user_attrs.get(SPEC_ATTR)
    if text is None:
        raise ConfigError(f"study {study.study_name!r} was not made by mpc-balancer tune (no {SPEC_ATTR})")
    return StudySpec.from_json(text)


def storage_label(storage) -> str:
    url = getattr(storage, "url", None)
    if url:
        return _masked(url)
    backend = getattr(storage, "_backend", None)
    return str(getattr(backend, "_file_path", "journal"))


def hindsight_key(trace: str, seed: int, days: float) -> str:
    return f"hindsight/{trace}/{seed}/{days!r}"


# ---------------------------------------------------------------------------------------------
def _retried(trials) -> set[int]:
    out: set[int] = set()
    for t in trials:
        out.update(t.system_attrs.get("retry_history", []))
    return out


def finished(trials) -> list:
    """Trials that count as run: complete, or failed by their own error (not killed, not interrupted)."""
    from optuna.trial import TrialState

    return [t for t in trials if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and "error" in t.user_attrs)]


def _exit_with_parent(parent: int) -> None:
    """Worker processes end when the ``tune`` process that started them is gone (killed with
    SIGKILL, its machine's session closed): their runs belong to trials that will be retried."""

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class Runner:
    """Runs trials of a study until it has ``spec.trials`` finished ones.

    Parameters
    ----------
    study, spec
        The study (from :func:`create_study` or :func:`load_study`) and its :class:`StudySpec`.
    evaluate
        ``evaluate(base, controller, options, trace, seed, days) -> {"revenue", "mu", "nu", ...}``,
        one closed-loop run; a module-level function (it is sent to worker processes).
    jobs
        Processes for the pairs (and, when a trial has fewer pairs than jobs, trials at once);
        1 runs everything in this process.
    progress
        Show a progress bar with ETA (stderr).
    poll_s
        How often to look for stale trials when the remaining trials run elsewhere.
    """

    def __init__(self, study, spec: StudySpec, evaluate, jobs: int = 1, progress: bool = False, poll_s: float = 2.0):
        self.study, self.spec, self.evaluate = study, spec, evaluate
        self.jobs, self.progress, self.poll_s = int(jobs), progress, float(poll_s)
        self._lock = threading.Lock()
        self._asking = threading.local()
        self._pool = None

    def __enter__(self) -> Runner:
        """Start the worker processes (``jobs > 1``)."""
        if self.jobs > 1 and self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_exit_with_parent, initargs=(os.getpid(),))
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # -- the hindsight limit, once per (trace, seed, days) ------------------------------------
    def hindsight(self) -> dict[tuple[str, int], float]:
        """Hindsight revenue of every pair, from the study; missing ones are computed (in parallel) and stored."""
        attrs = self.study.user_attrs
        spec = self.spec
        missing = [(t, s) for t, s in spec.pairs if hindsight_key(t, s, spec.days) not in attrs]
        if missing:  # each stored as soon as it is known: an interrupted study keeps what it computed
            jobs = [(spec.base, "hindsight", {}, t, s, spec.days) for t, s in missing]
            if self._pool is None:
                done = ((j, self.evaluate(*j)) for j in jobs)
            else:
                from concurrent.futures import as_completed

                futures = {self._pool.submit(self.evaluate, *j): j for j in jobs}
                done = ((futures[f], f.result()) for f in as_completed(futures))
            for j, m in done:
                self.study.set_user_attr(hindsight_key(j[3], j[4], spec.days), float(m["revenue"]))
            attrs = self.study.user_attrs
        return {(t, s): float(attrs[hindsight_key(t, s, spec.days)]) for t, s in spec.pairs}

    def _map(self, jobs: list[tuple]) -> list[dict]:
        if self._pool is None:
            return [self.evaluate(*j) for j in jobs]
        return [f.result() for f in [self._pool.submit(self.evaluate, *j) for j in jobs]]

    # -- one trial -------------------------------------------------------------------------
    def objective(self, trial):
        import optuna

        if getattr(self._asking, "held", False):
            self._asking.held = False
            self._lock.release()
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        counted = sorted({t.number for t in finished(trials)} | {t.number for t in trials if t.state == TrialState.RUNNING})
        if trial.number not in counted[: self.spec.trials]:
            raise optuna.TrialPruned(f"the study already has its {self.spec.trials} trials")
        if self.spec.sampler == "grid" and not trial.user_attrs.get("queued"):
            raise optuna.TrialPruned("every grid point is queued; this trial was not")
        params = self.spec.search_space.suggest(trial)
        # after the parameters: a trial that names its worker has recorded what it runs, so one
        # killed at any point afterwards is retried with the same setting
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        try:
            values = self.run_setting(params)
        except Exception as e:  # recorded: a setting that fails is a finished (failed) trial, not a killed one
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            raise
        for k, v in values.items():
            trial.set_user_attr(k, v)
        if self.spec.constraint:
            trial.set_user_attr("violation", Constraint.parse(self.spec.constraint).violation(values))
        return tuple(values[m] for m in self.spec.objective_names)

    def run_setting(self, params: dict) -> dict:
        """The figures of one setting (``{"SECTION.KEY": value}``) over the study's pairs."""
        spec = self.spec
        hind = self.hindsight()
        opts = {spec.controller: {name.split(".", 1)[1]: v for name, v in params.items()}}
        res = self._map([(spec.base, spec.controller, opts, t, s, spec.days) for t, s in spec.pairs])
        pairs = []
        for (t, s), m in zip(spec.pairs, res):
            pairs.append({"trace": t, "seed": s, "revenue": m["revenue"], "hindsight_revenue": hind[(t, s)],
                          "return_pct": 100.0 * m["revenue"] / hind[(t, s)], "mu": m["mu"], "nu": m["nu"],
                          **{k: m[k] for k in ("fallback_ticks", "solve_ms_p50", "solve_ms_p95") if k in m}})
        def mean(k):
            return sum(p[k] for p in pairs) / len(pairs)

        return {"return_pct": mean("return_pct"), "nu": mean("nu"), "mu": mean("mu"),
                "return_pct_min": min(p["return_pct"] for p in pairs), "nu_max": max(p["nu"] for p in pairs),
                "pairs": pairs}

    # -- the loop --------------------------------------------------------------------------
    def recover(self) -> int:
        """Queue again the trials a dead or interrupted process left (one-process journal storages:
        also its RUNNING trials). Returns how many were queued."""
        from optuna.storages import RetryHeartbeatStaleTrialCallback
        from optuna.trial import TrialState

        storage = self.study._storage
        if not is_shared(storage):
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        trials = self.study.get_trials(deepcopy=False)
        retried = _retried(trials)
        n = 0
        for t in trials:
            if t.state == TrialState.FAIL and "error" not in t.user_attrs and t.number not in retried:
                RetryHeartbeatStaleTrialCallback()(self.study, t)
                n += 1
        return n

    def _counts(self):
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        return len(finished(trials)), running, waiting

    def run(self) -> None:
        """Run trials (in ``max(1, jobs // pairs)`` threads) until the study has its trials.
        Use inside ``with runner:`` (the worker processes)."""
        import warnings

        import optuna

        n_threads = max(1, self.jobs // len(self.spec.pairs)) if self.jobs > 1 else 1
        self.hindsight()
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.spec.trials, initial=min(self._counts()[0], self.spec.trials), unit="trial", desc="tune")
        errors: list[BaseException] = []

        def step() -> bool:
            """Run one trial, or wait for the others; False when the study has its trials."""
            self._lock.acquire()
            held = True
            try:
                done, running, waiting = self._counts()
                if bar is not None:
                    bar.n = min(done, self.spec.trials)
                    bar.refresh()
                if done >= self.spec.trials or errors:
                    return False
                if waiting > 0 or (self.spec.sampler != "grid" and done + running < self.spec.trials):
                    self._asking.held, held = True, False  # objective() releases the lock once its trial is RUNNING
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                        self.study.optimize(self.objective, n_trials=1, catch=(Exception,))
                    return True
            finally:
                if held:
                    self._lock.release()
                elif getattr(self._asking, "held", False):  # optimize ended before objective() ran
                    self._asking.held = False
                    self._lock.release()
            # the remaining trials run elsewhere: fail the stale ones (their retries are queued) and wait
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
            time.sleep(self.poll_s)
            return True

        def guarded():
            try:
                while step():
                    pass
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=guarded, daemon=True) for _ in range(n_threads - 1)]
        try:
            for th in threads:
                th.start()
            while step():
                pass
            for th in threads:
                th.join()
            if errors:
                raise errors[0]
            if bar is not None:
                bar.n = min(self._counts()[0], self.spec.trials)
                bar.refresh()
        finally:
            if bar is not None:
                bar.close()


# ---------------------------------------------------------------------------------------------
# results
def trial_rows(study) -> list[dict]:
    """Every trial of the study: number, state, params, figures (when complete), error, retry."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"number": t.number, "state": t.state.name, "params": dict(t.params), "values": None}
        if "return_pct" in t.user_attrs:
            row["values"] = {m: t.user_attrs[m] for m in METRICS}
            row["figures"] = {k: t.user_attrs[k] for k in ("mu", "return_pct_min", "nu_max") if k in t.user_attrs}
            row["pairs"] = t.user_attrs.get("pairs", [])
        for k in ("error", "baseline"):
            if k in t.user_attrs:
                row[k] = t.user_attrs[k]
        if "failed_trial" in t.system_attrs:
            row["retry_of"] = t.system_attrs["failed_trial"]
        rows.append(row)
    return rows


def best_rows(rows: list[dict], spec: StudySpec) -> list[dict]:
    """The Pareto-optimal complete trials (by return_pct up, nu down), or the best feasible one under the constraint."""
    done = [r for r in rows if r["state"] == "COMPLETE" and r["values"] is not None]
    if spec.constraint:
        c = Constraint.parse(spec.constraint)
        ok = [r for r in done if c.violation(r["values"]) <= 0]
        if not ok:
            return []
        m = spec.objective_names[0]
        sign = 1 if METRICS[m] == "maximize" else -1
        return [max(ok, key=lambda r: (sign * r["values"][m], -r["number"]))]

    def dominates(a, b):
        ra, rb, na, nb = a["return_pct"], b["return_pct"], a["nu"], b["nu"]
        return ra >= rb and na <= nb and (ra > rb or na < nb)

    front = [r for r in done if not any(dominates(o["values"], r["values"]) for o in done if o is not r)]
    seen, out = set(), []
    for r in sorted(front, key=lambda r: (-r["values"]["return_pct"], r["number"])):
        key = (r["values"]["return_pct"], r["values"]["nu"])
        if key not in seen:  # the same figures twice (a duplicated setting): one entry
            seen.add(key)
            out.append(r)
    return out


def setting_config(spec: StudySpec, params: dict, header: str = "") -> str:
    """The base configuration with ``params`` applied, as TOML that ``simulate --config`` accepts."""
    tables = {k: dict(v) for k, v in spec.base.items()}
    run = tables.setdefault("run", {})
    run["controller"] = spec.controller
    section = tables.setdefault(spec.controller, {})
    for name, v in params.items():
        section[name.split(".", 1)[1]] = v
    return dumps(tables, header)


BEST_HEADER = "# best setting of study "  # the first line of every best/trial-N.toml written here


def _remove_stale_best(best_dir: Path, numbers: set[int]) -> None:
    """Delete the ``best/trial-N.toml`` files that an earlier run wrote and that are no longer best.

    A resumed study's front moves (trial 0 was best, now trial 7 is), and another study can write
    into the same ``--out``: without this, ``best/`` listed every setting that was ever best, in
    every study, as if all were. Only files this function's writer made (named ``trial-NNNN.toml``,
    first line :data:`BEST_HEADER`) are deleted; anything else in the directory is left alone.
    """
    if not best_dir.is_dir():
        return
    for f in best_dir.glob("trial-*.toml"):
        stem = f.stem.removeprefix("trial-")
        if not stem.isdigit() or int(stem) in numbers:
            continue
        try:
            with open(f, encoding="utf-8") as fh:
                ours = fh.readline().startswith(BEST_HEADER)
        except (OSError, UnicodeDecodeError):
            continue
        if ours:
            f.unlink()


def write_results(study, spec: StudySpec, out_dir: str | Path | None, storage_text: str) -> dict:
    """The study's summary (the ``--json`` schema); with ``out_dir``: ``trials.csv``, ``pareto.png``
    and one TOML per best setting in ``out_dir/best/``."""
    rows = trial_rows(study)
    best = best_rows(rows, spec)
    objectives = [{"name": m, "direction": METRICS[m]} for m in spec.objective_names]
    summary = {"study": study.study_name, "storage": storage_text, "objectives": objectives,
               "constraint": spec.constraint, "controller": spec.controller, "traces": spec.traces, "seeds": spec.seeds,
               "days": spec.days, "sampler": spec.sampler, "trials": rows, "best": []}
    out = Path(out_dir) if out_dir else None
    if out is not None:
        _remove_stale_best(out / "best", {r["number"] for r in best})
    for r in best:
        entry = {"number": r["number"], "params": r["params"], "values": r["values"], "config": None}
        if out is not None:
            p = out / "best" / f"trial-{r['number']:04d}.toml"
            p.parent.mkdir(parents=True, exist_ok=True)
            v = r["values"]
            header = (f"best setting of study {study.study_name} (trial {r['number']}): return_pct {v['return_pct']:.4f}, "
                      f"nu {v['nu']:.5f}\nmean over traces {','.join(spec.traces)} x seeds {','.join(map(str, spec.seeds))}, "
                      f"{spec.days:g} days each\nUse: mpc-balancer simulate --config {p.name}")
            p.write_text(setting_config(spec, r["params"], header), encoding="utf-8")
            entry["config"] = str(p)
        summary["best"].append(entry)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        _write_csv(rows, spec, out / "trials.csv")
        plot_front(rows, best, spec, out / "pareto.png")
    return summary


def _write_csv(rows: list[dict], spec: StudySpec, path: Path) -> None:
    import csv

    names = spec.search_space.names
    cols = ["number", "state", *names, "return_pct", "nu", "mu", "return_pct_min", "nu_max", "baseline", "retry_of", "error"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            v, fig = r.get("values") or {}, r.get("figures") or {}
            w.writerow([r["number"], r["state"], *[r["params"].get(n, "") for n in names], v.get("return_pct", ""),
                        v.get("nu", ""), fig.get("mu", ""), fig.get("return_pct_min", ""), fig.get("nu_max", ""),
                        int(bool(r.get("baseline"))), r.get("retry_of", ""), r.get("error", "")])


def plot_front(rows: list[dict], best: list[dict], spec: StudySpec, path: Path) -> None:
    """Every complete trial in (nu, return_pct), the best ones joined, the baseline (defaults) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["state"] == "COMPLETE" and r["values"]]
    fig, ax = plt.subplots(figsize=(7, 5))
    if done:
        ax.scatter([r["values"]["nu"] for r in done], [r["values"]["return_pct"] for r in done], s=18, c="0.6", label="trials")
    if best:
        b = sorted(best, key=lambda r: r["values"]["nu"])
        ax.plot([r["values"]["nu"] for r in b], [r["values"]["return_pct"] for r in b], "o-", c="C0",
                label="best (constrained)" if spec.constraint else "Pareto front")
        for r in b:
            ax.annotate(str(r["number"]), (r["values"]["nu"], r["values"]["return_pct"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    base = [r for r in done if r.get("baseline")]
    if base:
        ax.scatter([r["values"]["nu"] for r in base], [r["values"]["return_pct"] for r in base], marker="*", s=160,
                   c="C3", label="defaults", zorder=3)
    if spec.constraint:
        c = Constraint.parse(spec.constraint)
        (ax.axvline if c.metric == "nu" else ax.axhline)(c.bound, ls="--", c="C1", lw=1, label=str(c))
    ax.ticklabel_format(useOffset=False)
    ax.set_xlabel("nu, worst cluster (mean over pairs)")
    ax.set_ylabel("revenue, % of hindsight (mean over pairs)")
    ax.set_title(f"{spec.controller}: {len(done)} trials on {len(spec.pairs)} (trace, seed) pairs, {spec.days:g} days")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_trials(summary: dict) -> str:
    rows = summary["trials"]
    names = sorted({k for r in rows for k in r["params"]})
    best = {b["number"] for b in summary["best"]}
    head = f"{'trial':>6} {'state':<9}" + "".join(f"{n:>18}" for n in names) + f"{'return %':>10}{'nu':>9}{'mu':>8}"
    lines = [f"study {summary['study']} ({summary['storage']}): {summary['controller']} on "
             f"{','.join(summary['traces'])} x seeds {','.join(map(str, summary['seeds']))}, {summary['days']:g} days; "
             + (f"max return_pct s.t. {summary['constraint']}" if summary["constraint"] else "Pareto front of return_pct and nu"),
             head]
    for r in rows:
        v = r.get("values")
        fig = r.get("figures") or {}
        params = "".join(f"{_fmt(r['params'].get(n, '')):>18}" for n in names)
        vals = f"{v['return_pct']:>10.3f}{v['nu']:>9.5f}{fig.get('mu', float('nan')):>8.4f}" if v else ""
        mark = " *" if r["number"] in best else ""
        note = (" (defaults)" if r.get("baseline") else "") + (f" (retry of {r['retry_of']})" if "retry_of" in r else "")
        if r.get("error"):
            note += f" error: {r['error']}"
        lines.append(f"{r['number']:>6} {r['state']:<9}{params}{vals}{mark}{note}")
    lines.append("* best" + (" (Pareto-optimal)" if not summary["constraint"] else f" under {summary['constraint']}"))
    if summary["constraint"] and not best and any(r.get("values") for r in summary["trials"]):
        # else an unmet constraint looks like a table whose marks were lost
        lines.append(f"no complete trial meets {summary['constraint']}: no best setting (best/ is empty)")
    return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
