"""Sweeps: many trainings of one model's variants at once, on a Dask cluster (`nm.sweep`,
`mdlc sweep`).

A sweep is a grid (every combination of the `settings` values, times every seed) or an Optuna
search (`search="optuna"`: TPE over the same values, pruning on the validation metric). Each
trial compiles its variant of the model (values substituted by name, `variant_text`), trains
it with one thread, saves it atomically to DIR/models/KEY.nm and returns its metrics; the
client appends one JSON line per finished trial to DIR/results.jsonl, so a rerun skips the
trials already there (KEY is a hash of the model text, the data and the configuration).
Trials run on a Dask LocalCluster by default or on a scheduler's workers (many machines);
Dask reruns the trial of a worker that died; a trial that raises is recorded as failed and
the others go on. `workers=0` runs the trials one after another in this process (no Dask).

This module is not the training loop (`fit`, training.py), the flags of `mdlc sweep`
(neuromorph/cli.py) nor the names and keys of configurations (_sweep_config.py); decisions
and the file format: docs/sweep.md.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import re
import socket
import time
from typing import Any, Callable, Iterable, Iterator, Optional, Union, cast

import numpy as np

import mdl
from mdl.parser import parse as _parse

from ._sweep_config import (_ALIASES, _MINIMIZE, _OPTIMIZER_KEYS, OPTION_KEYS, TRAINING,
                            SweepError, _file_hash, _is_range, _resolve, _slots, grid,
                            model_names, parse_seeds, parse_values, split_config, trial_key,
                            value_text, variant_text)

__all__ = ["sweep", "run_trial", "sweep_command", "SweepError", "TRAINING", "OPTION_KEYS",
           "model_names", "variant_text", "value_text", "split_config", "parse_values",
           "parse_seeds", "grid", "trial_key", "format_row"]

Row = dict[str, Any]                  # one trial's result: a line of results.jsonl
Spec = dict[str, Any]                 # what a worker needs to run one trial


# ------------------------------------------------------------------------------- one trial
class _Pruned(Exception):
    pass


def _trial_data(h: int, ir: Any, spec: Spec, batch: int, seed: int) -> tuple[Any, Any]:
    """(inputs, expected) for one trial: --data (loaded by the worker) or the built-in task."""
    from .data import load_data
    from .tasks import make_task
    if spec.get("data"):
        x, e = load_data(spec["data"], x=spec.get("x"), y=spec.get("y"), model=h)
    else:
        x, e, _ = make_task(ir.doc, batch, spec["batches"], seed)
    if not ir.recurrent and spec.get("validation_split"):
        x, e = np.asarray(x), np.asarray(e)
        if x.ndim == 3:                   # (n_batches, batch, width) -> (N, width)
            x, e = x.reshape(-1, x.shape[-1]), e.reshape(-1, *e.shape[2:])
        order = np.random.default_rng(seed).permutation(len(x))
        x, e = x[order], e[order]
    return x, e


def _optuna_trial(spec: Spec) -> Any:
    """The Optuna trial this search trial reports to (the study's journal file in DIR)."""
    if not spec.get("optuna"):
        return None
    import optuna
    o = spec["optuna"]
    study = optuna.load_study(study_name=o["study"], storage=_journal(o["journal"]),
                              pruner=_pruner(o))
    return optuna.trial.Trial(study, o["trial_id"])


def run_trial(spec: Spec) -> Row:
    """Compile, train (one thread), save and measure one configuration; never raises for the
    trial's own failures: they come back as {"status": "failed", "error": ...}.

    spec: model text and filename, config, key, out (the sweep's folder), data/x/y or batches,
    epochs, validation_split, metrics, objective, and optionally optuna (study, journal,
    trial_id) for pruning. Runs on a Dask worker (or in this process with workers=0)."""
    from . import api as nm               # not the package: it imports this module
    start, cpu = time.time(), time.thread_time()
    running = os.path.join(spec["out"], "running", spec["key"])
    result: Row = {"key": spec["key"], "config": spec["config"], "host": socket.gethostname(),
                   "pid": os.getpid()}
    try:
        with open(running, "w") as f:
            f.write(f"{socket.gethostname()} {os.getpid()}\n")
        result.update(_train_one(nm, spec))
    except _Pruned as p:
        result.update(status="pruned", metrics=p.args[0], epochs=p.args[1])
    except Exception as e:  # the trial's own failure: reported, the sweep goes on
        first = str(e).strip().splitlines()
        result.update(status="failed", error=f"{type(e).__name__}: {first[0] if first else ''}",
                      detail=str(e) if len(first) > 1 else None)
    finally:
        try:
            os.unlink(running)
        except OSError:
            pass
    result["seconds"] = round(time.time() - start, 3)
    result["cpu_seconds"] = round(time.thread_time() - cpu, 3)   # < seconds: cores were busy
    return result


def _train_one(nm: Any, spec: Spec) -> Row:
    train, values, seed = split_config(spec["config"])
    text = variant_text(spec["text"], values, spec["filename"])
    ir = mdl.compile_text(text, spec["filename"], warn=False)
    optimizer = train.get("optimizer", "sgd")
    batch = train.get("batch") or (5 if ir.recurrent else 16)
    lr = train.get("lr") or (0.003 if optimizer in ("adam", "adamw")
                             else 0.5 if ir.recurrent else 0.05)
    epochs = int(train["epochs"] if "epochs" in train else spec["epochs"])
    opts = {k: train[k] for k in _OPTIMIZER_KEYS if k in train}
    nm.seed(seed)
    h = nm.compile_ir(ir.to_json(), batch, lr, optimizer=optimizer, **opts)
    try:
        nm.build(h, threads=1)
        x, e = _trial_data(h, ir, spec, batch, seed)
        trial = _optuna_trial(spec)
        metrics: dict[str, float] = {}
        for epoch in range(epochs):
            hist = nm.fit(h, x, e, epochs=1, shuffle=not ir.recurrent, verbosity=0,
                          validation_split=spec.get("validation_split") or None,
                          metrics=spec.get("metrics") or None)
            metrics = {k: float(v) for k, v in hist.epochs[-1].items()
                       if isinstance(v, (int, float, np.floating)) and k != "epoch"}
            if trial is not None and spec["objective"] in metrics:
                trial.report(metrics[spec["objective"]], epoch)
                if trial.should_prune():
                    raise _Pruned(metrics, epoch + 1)
        path = os.path.join(spec["out"], "models", spec["key"] + ".nm")
        nm.save(h, path)                  # written beside, then renamed: atomic
    finally:
        nm.release(h)
    return {"status": "ok", "metrics": metrics, "epochs": epochs,
            "model": os.path.relpath(path, spec["out"])}


# ------------------------------------------------------------------------------ the sweep
def _read_results(path: str) -> dict[str, Row]:
    """key -> the last line recorded for it (a torn last line from a killed run is skipped)."""
    done: dict[str, Row] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                    done[row["key"]] = row
                except (ValueError, KeyError, TypeError):
                    continue
    except FileNotFoundError:
        pass
    return done


class _Results:
    """DIR/results.jsonl, written by the client alone: one line per finished trial."""

    def __init__(self, out: str, on_result: Optional[Callable[[Row], None]]):
        self.path = os.path.join(out, "results.jsonl")
        self.on_result = on_result
        self.rows: list[Row] = []

    def add(self, row: Row) -> None:
        line = json.dumps(row, default=str) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.rows.append(row)
        if self.on_result is not None:
            self.on_result(row)


def _client(workers: Optional[int], scheduler: Optional[str]) -> tuple[Any, Any]:
    if not scheduler:
        _fast_worker_start()              # first: its imports overlap with Dask's below
    try:
        dist = cast(Any, importlib.import_module("distributed"))
    except ImportError:
        raise SweepError("sweeps on workers need Dask: pip install 'neuromorph[sweep]' (or run "
                         "serially with workers=0)") from None
    if scheduler:
        return dist.Client(scheduler), None
    n = workers or os.cpu_count() or 1
    cluster = dist.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                dashboard_address=None)
    return dist.Client(cluster), cluster


def _fast_worker_start() -> None:
    """Start local workers from a fork server that has imported Dask, numpy and the engine
    once, instead of spawning fresh interpreters that each import them again (about 1.5 s of
    CPU per worker). The server is a single-threaded Python process, so forking it is safe,
    unlike forking this one; it starts now and imports while this process imports Dask. Only
    where forkserver exists and the user has not chosen a method; the setting stays for this
    process (restarted workers use it too)."""
    import multiprocessing
    try:
        dask = cast(Any, importlib.import_module("dask"))
    except ImportError:
        return
    key = "distributed.worker.multiprocessing-method"
    chosen = os.environ.get("DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD")
    if chosen or dask.config.get(key, "spawn") != "spawn" or \
            "forkserver" not in multiprocessing.get_all_start_methods():
        return
    dask.config.set({key: "forkserver"})
    multiprocessing.get_context("forkserver").set_forkserver_preload(
        ["distributed", "numpy", "neuromorph.sweep"])
    importlib.import_module("multiprocessing.forkserver").ensure_running()


def _runner(workers: Optional[int], scheduler: Optional[str]) -> "_Runner":
    """Where trials run: this process (workers=0) or a Dask cluster."""
    if workers == 0 and not scheduler:
        return _SerialRunner()
    return _DaskRunner(*_client(workers, scheduler))


class _Runner:
    """submit(spec) queues a trial; finished() yields (spec, row) as trials end."""

    slots = 1

    def submit(self, spec: Spec) -> None:
        raise NotImplementedError

    def finished(self) -> Iterator[tuple[Spec, Row]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _SerialRunner(_Runner):
    def __init__(self) -> None:
        self.pending: list[Spec] = []

    def submit(self, spec: Spec) -> None:
        self.pending.append(spec)

    def finished(self) -> Iterator[tuple[Spec, Row]]:
        while self.pending:
            spec = self.pending.pop(0)
            yield spec, run_trial(spec)


class _DaskRunner(_Runner):
    """Trials as Dask tasks; a worker's death reschedules its task (Dask's allowed-failures);
    a task that kills every worker it lands on comes back as failed."""

    def __init__(self, client: Any, cluster: Any) -> None:
        self.client, self.cluster = client, cluster
        dist = cast(Any, importlib.import_module("distributed"))
        self.done = dist.as_completed([], with_results=False)
        self.specs: dict[str, Spec] = {}

    @property
    def slots(self) -> int:  # type: ignore[override]
        """Threads of the workers connected now (the search keeps that many trials running)."""
        return max(1, sum(cast(dict[str, int], self.client.nthreads()).values()))

    def submit(self, spec: Spec) -> None:
        fut = self.client.submit(run_trial, spec, key=f"trial-{spec['key']}", pure=False)
        self.specs[fut.key] = spec
        self.done.add(fut)

    def finished(self) -> Iterator[tuple[Spec, Row]]:
        for fut in self.done:
            spec = self.specs.pop(fut.key)
            try:
                row = cast(Row, fut.result())
            except Exception as e:  # KilledWorker, a lost scheduler connection, ...
                row = {"key": spec["key"], "config": spec["config"], "status": "failed",
                       "error": f"{type(e).__name__}: {e}"}
            fut.release()
            yield spec, row
            if not self.specs:
                return

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def sweep(model: Union[str, "os.PathLike[str]"], settings: Optional[dict[str, Any]] = None, *,
          seeds: Iterable[int] = (0,), out: Union[str, "os.PathLike[str]"] = "sweep",
          workers: Optional[int] = None, scheduler: Optional[str] = None,
          data: Union[str, "os.PathLike[str]", None] = None, x: Optional[str] = None,
          y: Optional[str] = None, epochs: int = 5, batches: int = 200,
          validation_split: Optional[float] = 0.2, metrics: Optional[list[str]] = None,
          objective: Optional[str] = None, search: Optional[str] = None,
          trials: Optional[int] = None,
          on_result: Optional[Callable[[Row], None]] = None) -> list[Row]:
    """Train every configuration of `model` and return one result dict per trial.

    model: an .mdl path, MDL text or a shipped model's name. settings: name -> list of
    values; a training setting (lr, batch, epochs, optimizer, momentum, weight_decay,
    grad_clip, schedule, warmup, min_lr, step_size, gamma) or a part of the model: an option
    KEY (every node carrying it, e.g. dim), NODE.KEY, NODE.width or NODE.shape, or a node's
    name (its width). Every value for every seed is one trial (a grid), or with
    search="optuna", `trials` TPE trials over those values (a string "a:b" or "a:b:log" is a
    range) on seeds[0], pruned on `objective` after each epoch.

    out: the folder for results.jsonl, models/KEY.nm and the Optuna journal; trials already
    in results.jsonl with status ok (or pruned) are not run again. workers: a LocalCluster of
    that many one-thread workers (default: one per CPU); 0 runs serially in this process;
    scheduler="tcp://host:8786" uses a running Dask cluster instead (out and data must then
    be on a filesystem the workers share). data/x/y as nm.load_data (else the built-in task
    of `batches` batches). Results: {"key", "config", "status": "ok"|"failed"|"pruned",
    "metrics": {"loss", "val_loss", "val_<metric>"...}, "model", "error", "seconds", "skipped"}.
    """
    text, filename = _model_text(model)
    values = {k: list(v) if isinstance(v, (list, tuple, range)) else [v]
              for k, v in (settings or {}).items()}
    seed_list = list(seeds)
    objective = objective or ("val_loss" if validation_split else "loss")
    if not seed_list:
        raise SweepError("no seeds")
    _check_names(text, filename, values)
    folder = os.path.abspath(os.fspath(out))
    for sub in ("", "models", "running"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    data_id = _file_hash(os.fspath(data)) if data is not None else "task"
    if data is not None and y is not None and os.path.isfile(y):    # X.npy with --y Y.npy
        y = os.path.abspath(y)
        data_id += _file_hash(y)
    fixed = {"epochs": epochs, "batches": None if data is not None else batches,
             "validation_split": validation_split, "metrics": metrics, "x": x, "y": y}
    base: Spec = {"text": text, "filename": filename, "out": folder, "epochs": epochs,
            "batches": batches, "validation_split": validation_split, "metrics": metrics,
            "objective": objective, "data": os.path.abspath(os.fspath(data)) if data else None,
            "x": x, "y": y}
    model_hash = hashlib.sha256(text.encode()).hexdigest()

    def spec_of(config: dict[str, Any]) -> Spec:
        return dict(base, config=config, key=trial_key(model_hash, data_id, config, fixed))

    results = _Results(folder, on_result)
    done = _read_results(results.path)
    if search is None:
        return _run_grid([spec_of(c) for c in grid(values, seed_list)], done, results,
                         workers, scheduler)
    if search != "optuna":
        raise SweepError(f"search must be None or 'optuna', got {search!r}")
    return _run_optuna(spec_of, values, seed_list[0], trials, objective, folder, done, results,
                       workers, scheduler)


def _model_text(model: Union[str, "os.PathLike[str]"]) -> tuple[str, str]:
    """(text, filename) of an .mdl path, MDL text or a shipped model's name."""
    name = os.fspath(model)
    if not os.path.isfile(name):
        if "\n" in name or "(" in name:
            return name, "<string>"
        from . import models
        try:
            name = models.path(name)
        except FileNotFoundError:
            raise SweepError(f"{name} is neither a file, MDL text nor a shipped model") from None
    with open(name, encoding="utf-8") as f:
        return f.read(), name


def _check_names(text: str, filename: str, settings: dict[str, list[Any]]) -> None:
    """Every model name resolves and every value is one token, before any trial starts."""
    slots = _slots(_parse(text, filename))
    for name, values in settings.items():
        if name == "seed":
            raise SweepError("give seeds with seeds= (--seeds), not as a setting")
        if _ALIASES.get(name, name) in TRAINING:
            continue
        _resolve(name, slots)
        for v in values:
            if not (isinstance(v, str) and _is_range(v)):
                value_text(v)


def _run_grid(specs: list[Spec], done: dict[str, Row], results: _Results,
              workers: Optional[int], scheduler: Optional[str]) -> list[Row]:
    todo: list[Spec] = []
    rows: dict[str, Optional[Row]] = {}
    for spec in specs:
        prev = done.get(spec["key"])
        if prev is not None and prev.get("status") in ("ok", "pruned"):
            rows[spec["key"]] = dict(prev, skipped=True)
        elif spec["key"] not in rows:
            todo.append(spec)
            rows[spec["key"]] = None
    if todo:
        runner = _runner(workers, scheduler)
        try:
            for spec in todo:
                runner.submit(spec)
            for spec, row in runner.finished():
                results.add(row)
                rows[spec["key"]] = row
        finally:
            runner.close()
    return _ordered(specs, rows)


def _ordered(specs: list[Spec], rows: dict[str, Optional[Row]]) -> list[Row]:
    seen: set[str] = set()
    out: list[Row] = []
    for s in specs:
        row = rows.get(s["key"])
        if s["key"] not in seen and row is not None:
            seen.add(s["key"])
            out.append(row)
    return out


# ------------------------------------------------------------------------------- optuna
def _journal(path: str) -> Any:
    optuna = cast(Any, importlib.import_module("optuna"))
    try:
        backend = importlib.import_module("optuna.storages.journal").JournalFileBackend(path)
    except (ImportError, AttributeError):  # Optuna 3.x
        backend = optuna.storages.JournalFileStorage(path)
    return optuna.storages.JournalStorage(backend)


def _pruner(o: dict[str, Any]) -> Any:
    optuna = cast(Any, importlib.import_module("optuna"))
    return optuna.pruners.MedianPruner(n_startup_trials=o.get("startup", 4), n_warmup_steps=1)


def _distribution(values: list[Any]) -> Any:
    d = cast(Any, importlib.import_module("optuna.distributions"))
    if len(values) == 1 and isinstance(values[0], str) and _is_range(values[0]):
        parts = values[0].split(":")
        lo, hi, log = parts[0], parts[1], len(parts) == 3
        if re.fullmatch(r"[+-]?\d+", lo) and re.fullmatch(r"[+-]?\d+", hi):
            return d.IntDistribution(int(lo), int(hi), log=log)
        return d.FloatDistribution(float(lo), float(hi), log=log)
    return d.CategoricalDistribution(values)


def _run_optuna(spec_of: Callable[[dict[str, Any]], Spec], settings: dict[str, list[Any]],
                seed: int, trials: Optional[int], objective: str, out: str,
                done: dict[str, Row], results: _Results, workers: Optional[int],
                scheduler: Optional[str]) -> list[Row]:
    """Ask/tell TPE search: the client asks, the workers train and report each epoch's
    `objective` to the study's journal (DIR/optuna.journal), the client tells."""
    try:
        optuna = cast(Any, importlib.import_module("optuna"))
    except ImportError:
        raise SweepError("search='optuna' needs Optuna: pip install 'neuromorph[sweep]'") from None
    if not trials or trials < 1:
        raise SweepError("search='optuna' needs trials >= 1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = "minimize" if objective.split("val_", 1)[-1] in _MINIMIZE else "maximize"
    journal = os.path.join(out, "optuna.journal")
    o = {"study": "sweep", "journal": journal, "startup": 4}
    study = optuna.create_study(study_name="sweep", storage=_journal(journal),
                                load_if_exists=True, direction=direction,
                                sampler=optuna.samplers.TPESampler(seed=seed), pruner=_pruner(o))
    State = optuna.trial.TrialState
    for t in study.get_trials(deepcopy=False, states=(State.RUNNING, State.WAITING)):
        study.tell(t.number, state=State.FAIL)      # left behind by a killed earlier run
    dists = {k: _distribution(v) for k, v in settings.items()}
    finished = len(study.get_trials(deepcopy=False,
                                    states=(State.COMPLETE, State.PRUNED, State.FAIL)))
    runner = _runner(workers, scheduler) if finished < trials else None
    rows: list[Row] = [dict(r, skipped=True) for r in done.values() if "trial" in r]
    try:
        inflight = 0
        while finished + inflight < trials or inflight:
            while runner is not None and finished + inflight < trials and inflight < runner.slots:
                t = study.ask(dists)
                spec = spec_of(dict(t.params, seed=seed))
                prev = done.get(spec["key"])
                if prev is not None and prev.get("status") == "ok" \
                        and objective in prev.get("metrics", {}):
                    study.tell(t, prev["metrics"][objective])   # already trained: reuse
                    rows.append(dict(prev, skipped=True, trial=t.number))
                    finished += 1
                    continue
                spec["optuna"] = dict(o, trial_id=t._trial_id, number=t.number)
                runner.submit(spec)
                inflight += 1
            if runner is None or not inflight:
                break
            for spec, row in runner.finished():
                inflight -= 1
                finished += 1
                row["trial"] = spec["optuna"]["number"]
                _tell(study, spec["optuna"]["number"], row, objective, State)
                results.add(row)
                rows.append(row)
                break
    finally:
        if runner is not None:
            runner.close()
    return sorted(rows, key=lambda r: r.get("trial", -1))


def _tell(study: Any, number: int, row: Row, objective: str, State: Any) -> None:
    value = row.get("metrics", {}).get(objective)
    if row["status"] == "ok" and value is not None and math.isfinite(value):
        study.tell(number, value)
    elif row["status"] == "pruned":
        study.tell(number, state=State.PRUNED)
    else:
        if row["status"] == "ok":
            row.update(status="failed", error=f"no finite {objective} in the metrics "
                                              f"({', '.join(row.get('metrics', {}))})")
        study.tell(number, state=State.FAIL)


def format_row(row: Row) -> str:
    """One line for a finished trial: status, configuration, metrics or error, seconds."""
    cfg = " ".join(f"{k}={v}" for k, v in row.get("config", {}).items())
    if row.get("status") == "ok" or row.get("status") == "pruned":
        m = " ".join(f"{k}={v:.4g}" for k, v in row.get("metrics", {}).items())
        extra = f"{m}" + (f" (pruned after {row.get('epochs')} epochs)"
                          if row["status"] == "pruned" else "")
    else:
        extra = row.get("error", "")
    took = f" [{row['seconds']:.1f} s]" if "seconds" in row else ""
    return f"{row.get('status', '?'):7s} {row.get('key', '')}  {cfg}  {extra}{took}"


# ------------------------------------------------------------------------- `mdlc sweep`
def sweep_command(args: Any) -> int:
    """`mdlc sweep`: parse --set/--seeds, run the sweep, print a line per finished trial and
    the best configuration; exit 0 when every trial finished, 3 when some failed."""
    from mdl.cli import UsageError
    settings: dict[str, Any] = {}
    try:
        for item in args.set or []:
            name, sep, values = item.partition("=")
            if not sep or not name.strip():
                raise SweepError(f"--set takes NAME=V1,V2,...; got {item!r}")
            settings[name.strip()] = parse_values(values)
        seeds = parse_seeds(args.seeds)
    except SweepError as e:
        raise UsageError(str(e)) from None
    if args.search and not args.trials:
        raise UsageError("--search optuna needs --trials N")
    total = [0]

    def show(row: Row) -> None:
        total[0] += 1
        print(f"[{total[0]}] {format_row(row)}", flush=True)

    try:
        rows = sweep(args.file, settings, seeds=seeds, out=args.output, workers=args.workers,
                     scheduler=args.scheduler, data=args.data, x=args.x, y=args.y,
                     epochs=args.epochs, batches=args.batches,
                     validation_split=args.validation_split, metrics=args.metrics,
                     objective=args.objective, search=args.search, trials=args.trials,
                     on_result=show)
    except SweepError as e:
        raise UsageError(str(e)) from None
    objective = args.objective or ("val_loss" if args.validation_split else "loss")
    return _summary(rows, objective, os.path.join(args.output, "results.jsonl"))


def _summary(rows: list[Row], objective: str, path: str) -> int:
    skipped = sum(1 for r in rows if r.get("skipped"))
    failed = [r for r in rows if r.get("status") == "failed"]
    ok = [r for r in rows if r.get("status") == "ok" and objective in r.get("metrics", {})]
    print(f"{len(rows)} trials: {len(rows) - len(failed)} finished ({skipped} from an earlier "
          f"run), {len(failed)} failed; results in {path}")
    if ok:
        sign = 1 if objective.split("val_", 1)[-1] in _MINIMIZE else -1
        best = min(ok, key=lambda r: sign * r["metrics"][objective])
        cfg = " ".join(f"{k}={v}" for k, v in best["config"].items())
        print(f"best {objective} {best['metrics'][objective]:.6g}: {cfg} "
              f"({best.get('model', '')})")
    return 3 if failed else 0
