"""mlguard.scan(): check many model files against many keys, streaming.

The pipeline, per rank:

    reader threads (ThreadPoolExecutor)             main thread
    read file + SHA-256, decode safely,     --->    load weights in place into one module,
    reject NaN/inf, hash the weights,               one forward pass for all trigger keys,
    stage to the device (pinned buffer +            p-values, journal commit, progress
    side CUDA stream)

At most `prefetch` files (and MAX_INFLIGHT_BYTES) are in flight, so memory stays bounded
while reading model i+1 overlaps checking model i; file buffers are reused (BufferPool).
Everything also runs on the CPU (no pinned memory, no streams).
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from ..keys import load_key
from ..verification.verify import weights_sha256
from . import distributed, loading
from .buffers import BufferPool
from .checkers import (CHECKERS, CheckerOptions, LoadedModel, Outcome, arch_name,
                       resolve_arch, scheme_of)
from .journal import Journal, file_stamp
from .result import ScanResult
from .rows import adjust, key_columns, make_row, name_keys, summary_line
from .staging import DeviceStager


MAX_INFLIGHT_BYTES = 4 << 30  # file bytes read ahead of the model being checked


@dataclass
class _Failed:
    """A file that could not be loaded: one error row per key."""

    path: str
    size: int | None
    sha256: str | None
    error: str
    weights_sha256: str | None = None


def scan(models, keys, arch=None, device=None, journal=None, alpha: float = 1e-6,
         batch_size: int | None = None, workers: int | None = None,
         trust_torchscript: bool = False, progress: bool | None = None, *,
         arch_kwargs: dict | None = None,
         autocast: bool | None = None,
         prefetch: int | None = None) -> ScanResult:
    """Checks every model file under `models` against every key; returns one row per pair.

    Args:
        models: a file or folder, or a list of them; folders are searched recursively for
            .safetensors, .pt, .pth, .bin, .ckpt (and TorchScript .pts/.ptl/.jit) files.
        keys: key objects or key file paths (a folder means its *.key files), or one of them.
        arch: the architecture of state_dict files, "package.module:factory" or a callable,
            called once as ``factory(**arch_kwargs)``; needed for trigger-set keys unless
            every file is a trusted TorchScript archive.
        device: where to check ("cpu", "cuda", "cuda:1"); default cuda:LOCAL_RANK if CUDA is
            available, else the CPU.
        journal: an SQLite file; rows are committed to it as they are produced, and a rerun
            with the same journal skips the (file, key) pairs already done.
        alpha: significance level for the whole scan: ``detected`` is
            ``adjusted_p_value < alpha``, with the Bonferroni correction over the number of
            (model, key) pairs tested.
        batch_size: trigger images per forward pass; default 1024 on CUDA, 64 on the CPU
            (where large batches spill out of the caches and run slower per image).
        workers: reader threads (default min(8, CPU count)).
        trust_torchscript: load TorchScript archives (this runs code from the file).
        progress: a tqdm bar (tqdm.auto: a widget in Jupyter) and summary line on stderr;
            default when stderr is a TTY or in a Jupyter kernel.
        autocast: bf16 autocast for the forward pass; default on for CUDA, off on the CPU.
        prefetch: files read ahead of the one being checked (default 2 * workers).

    Returns:
        A ScanResult: a list of rows (dicts, columns in ``mlguard.scan.rows.COLUMNS``)
        ordered by path, then key, with ``.detections``, ``.errors``, ``.to_pandas()`` and
        an HTML view for notebooks.
        Each has the file's SHA-256 and its weights hash (``weights_sha256``, the hash
        verdicts and evidence reports cite), the key's id and commitment, matches/total, the exact
        p-value (and log10), the adjusted p-value, ``detected`` and ``error``: a file that
        cannot be checked gets one row per key with ``error`` naming the problem. Under
        torchrun every rank returns all rows.
    """
    start = time.perf_counter()
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be in the open interval (0, 1), got {alpha!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    prefetch = 2 * workers if prefetch is None else prefetch
    if not isinstance(prefetch, int) or prefetch < 1:
        raise ValueError(f"prefetch must be an int >= 1, got {prefetch!r}")
    ranks = distributed.from_env()
    device = _resolve_device(device, ranks)
    key_list = load_keys(keys)
    factory = resolve_arch(arch, arch_kwargs)
    by_scheme = _keys_by_scheme(key_list)
    needs_module = [s for s in by_scheme if getattr(CHECKERS[s], "needs_module", False)]
    if needs_module and factory is None and not trust_torchscript:
        raise ValueError(f"arch is required for {', '.join(needs_module)} keys: state_dict "
                         "files do not say which network they belong to (pass "
                         "arch='package.module:factory', or --arch on the command line)")
    autocast = device.type == "cuda" if autocast is None else bool(autocast)
    batch_size = batch_size or (1024 if device.type == "cuda" else 64)
    options = CheckerOptions(factory, batch_size, autocast)
    checkers = {scheme: CHECKERS[scheme](members, device, options)
                for scheme, members in by_scheme.items()}
    for checker in checkers.values():  # configuration errors stop the scan before it starts
        preflight = getattr(checker, "preflight", None)
        if preflight is not None:
            preflight()

    all_files = loading.discover(models)
    if not all_files:
        raise ValueError(f"models: no model files found in {models!r}")
    files = distributed.shard(all_files, ranks)
    in_notebook = "ipykernel" in sys.modules  # stderr is no TTY there, but a widget shows
    show = ((sys.stderr.isatty() or in_notebook) if progress is None else bool(progress)) \
        and ranks.rank == 0
    journal_db = None
    if journal is not None:
        journal_db = Journal(distributed.journal_shard(journal, ranks), {
            "arch": arch_name(arch, arch_kwargs), "trust_torchscript": bool(trust_torchscript),
            "precision": "bf16-autocast" if autocast and device.type == "cuda" else "fp32"})
    try:
        rows, todo = _plan(files, key_list, journal_db)
        if journal_db is not None and rows and ranks.rank == 0:
            done = len(files) - len(todo)
            print(f"scan: resuming from journal {journal}: {done} of {len(files)} files already "
                  f"done, {len(todo)} to check", file=sys.stderr)
        runner = _Runner(key_list, by_scheme, checkers, device, journal_db, trust_torchscript)
        rows += runner.run(todo, workers, prefetch, show)
    finally:
        if journal_db is not None:
            journal_db.close()

    rows = distributed.gather_rows(rows, ranks, device)
    order = {k.commitment(): i for i, k in enumerate(key_list)}
    rows.sort(key=lambda r: (r["path"], order[r["commitment"]]))
    name_keys(rows, key_list)  # journaled rows name the keys as this scan was given them
    adjust(rows, alpha)
    if show:
        print(summary_line(rows, time.perf_counter() - start), file=sys.stderr)
    return ScanResult(rows, alpha)


def load_keys(keys) -> list:
    """Key objects from objects, key files or folders of *.key files; no duplicates."""
    if isinstance(keys, (str, os.PathLike)) or not isinstance(keys, Iterable):
        keys = [keys]
    out = []
    for item in keys:
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if path.is_dir():
                found = [load_key(p) for p in sorted(path.rglob("*.key"))]
                if not found:  # e.g. a folder of models swallowed by --keys
                    raise ValueError(f"keys: folder '{item}' holds no *.key files")
                out += found
            elif path.exists():
                out.append(load_key(path))
            else:
                raise FileNotFoundError(f"keys: no such key file: '{item}'")
        else:
            out.append(item)
    if not out:
        raise ValueError("keys must hold at least one key")
    seen: set[str] = set()
    for key in out:
        commitment = key.commitment()
        if commitment in seen:
            raise ValueError(f"keys: key {commitment[:16]} is given twice")
        seen.add(commitment)
    return out


def _keys_by_scheme(keys: list) -> dict[str, list]:
    by_scheme: dict[str, list] = {}
    for key in keys:
        by_scheme.setdefault(scheme_of(key), []).append(key)
    unknown = sorted(set(by_scheme) - set(CHECKERS))
    if unknown:
        raise ValueError(f"keys: no checker for scheme(s) {unknown}; known: {sorted(CHECKERS)}")
    return by_scheme


def _resolve_device(device, ranks: distributed.Ranks) -> torch.device:
    if device is None:
        return distributed.default_device(ranks)
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be like 'cpu', 'cuda' or 'cuda:1', got {device!r}: {e}") \
            from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r} but CUDA is not available here")
        if device.index is None:
            device = torch.device("cuda", ranks.local_rank % torch.cuda.device_count())
    return device


def _plan(files: list[str], keys: list, journal: Journal | None
          ) -> tuple[list[dict], list[tuple[str, tuple[int, int]]]]:
    """(rows already in the journal, files still to check with their (size, mtime))."""
    commitments = {k.commitment() for k in keys}
    done = journal.done() if journal is not None else {}
    finished, todo = [], []
    for path in files:
        try:
            stamp = file_stamp(path)
        except OSError:
            stamp = (-1, -1)  # vanished or unreadable: the reader reports it
        size, mtime, have = done.get(path, (None, None, set()))
        if (size, mtime) == stamp and commitments <= have:
            finished.append(path)
        else:
            todo.append((path, stamp))
    rows = journal.rows(finished, commitments) if finished else []
    return rows, todo


class _Runner:
    """The streaming loop for one rank's files (see the module docstring)."""

    def __init__(self, keys: list, by_scheme: dict[str, list], checkers: dict, device,
                 journal: Journal | None, trust_torchscript: bool):
        self.keys, self.by_scheme, self.checkers = keys, by_scheme, checkers
        self.labels = [(k.commitment(), scheme_of(k)) for k in keys]  # computed once
        self.device, self.journal = device, journal
        self.trust_torchscript = trust_torchscript
        self.stager = DeviceStager(device)
        self.per_call = max(c.models_per_call for c in checkers.values())
        self.pool: BufferPool | None = None

    def run(self, todo: list, workers: int, prefetch: int, show: bool) -> list[dict]:
        from tqdm.auto import tqdm  # a widget in notebooks

        rows: list[dict] = []
        stamps = dict(todo)
        self.pool = BufferPool(keep=prefetch + workers + self.per_call)
        bar = tqdm(total=len(todo), unit="model", disable=not show, dynamic_ncols=True,
                   desc="scan")
        read_bytes, started = 0, time.perf_counter()
        queue = deque(todo)
        pending: deque[tuple[Future, int]] = deque()  # (future, file size)
        with ThreadPoolExecutor(workers, thread_name_prefix="mlguard-scan") as pool, bar:
            def refill() -> None:
                # Read ahead by `prefetch` files, but hold at most MAX_INFLIGHT_BYTES of
                # them (huge checkpoints): never fewer than a checker's call needs.
                inflight = sum(size for _, size in pending)
                while queue and len(pending) < max(prefetch, self.per_call + 1):
                    path, (size, _) = queue[0]
                    if len(pending) > self.per_call and inflight + size > MAX_INFLIGHT_BYTES:
                        return
                    queue.popleft()
                    pending.append((pool.submit(self._prepare, path), size))
                    inflight += max(size, 0)

            refill()
            batch: list[LoadedModel] = []
            while pending:
                item = pending.popleft()[0].result()
                refill()
                checked = 0  # the bar counts files checked (rows committed), not files read
                if isinstance(item, _Failed):
                    rows += self._commit(item.path, stamps[item.path], self._error_rows(item))
                    checked = 1
                else:
                    batch.append(item)
                if batch and (len(batch) >= self.per_call or not pending):
                    rows += self._check(batch, stamps)
                    checked += len(batch)
                    batch = []
                read_bytes += item.size or 0
                rate = read_bytes / 1e6 / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix_str(f"read {rate:.0f} MB/s", refresh=False)
                bar.update(checked)
        return rows

    def _prepare(self, path: str) -> LoadedModel | _Failed:
        """Runs on a reader thread: read, hash, decode, validate, stage to the device."""
        size = sha = weights_sha = file = None
        try:
            file = loading.read_model_file(path, self.pool)
            size, sha = file.size, file.sha256
            decoded = loading.decode(file.data, self.trust_torchscript)
            weights_sha = weights_sha256(decoded.state_dict)  # as verify and evidence hash it
            loading.check_finite(decoded.state_dict)
            if decoded.module is not None:
                module = self.stager.module(decoded.module)
                state = dict(module.state_dict())
            else:
                module, state = None, self.stager(decoded.state_dict)
            # Safetensors tensors on the CPU view the file's buffer until they are checked.
            keep = decoded.format == "safetensors" and self.device.type == "cpu"
            model = LoadedModel(path, size, sha, state, module,
                                buffer=file.buffer if keep else None, weights_sha256=weights_sha)
            if not keep:
                self.pool.release(file.buffer)
            return model
        except Exception as e:
            if file is not None:
                self.pool.release(file.buffer)
            if isinstance(e, loading.ModelFileError):
                return _Failed(path, size, sha, str(e), weights_sha)
            # Anything unforeseen in a hostile file: report it and go on.
            return _Failed(path, size, sha, f"cannot load: {type(e).__name__}: {e}"[:300],
                           weights_sha)

    def _check(self, batch: list[LoadedModel], stamps: dict) -> list[dict]:
        """Runs every scheme's checker on a batch; commits each file's rows at once."""
        outcomes: dict[str, list[list[Outcome]]] = {}
        for scheme, checker in self.checkers.items():
            try:
                outcomes[scheme] = checker.check(batch)
            except Exception as e:
                failed = Outcome.failed(f"{scheme} check failed: {type(e).__name__}: {e}"[:300])
                outcomes[scheme] = [[failed] * len(self.by_scheme[scheme]) for _ in batch]
        rows = []
        for i, model in enumerate(batch):
            per_key = {id(k): o for scheme, members in self.by_scheme.items()
                       for k, o in zip(members, outcomes[scheme][i])}
            file_rows = [make_row(model.path, model.size, model.sha256, commitment, scheme,
                                  per_key[id(k)], str(self.device), model.weights_sha256,
                                  **key_columns(k))
                         for k, (commitment, scheme) in zip(self.keys, self.labels)]
            rows += self._commit(model.path, stamps[model.path], file_rows)
            if model.buffer is not None:  # checked: nothing views the file's bytes any more
                model.state_dict = {}
                self.pool.release(model.buffer)
        return rows

    def _error_rows(self, failed: _Failed) -> list[dict]:
        outcome = Outcome.failed(failed.error)
        return [make_row(failed.path, failed.size, failed.sha256, commitment, scheme, outcome,
                         str(self.device), failed.weights_sha256, **key_columns(k))
                for k, (commitment, scheme) in zip(self.keys, self.labels)]

    def _commit(self, path: str, stamp, rows: list[dict]) -> list[dict]:
        """Journals all rows of one file in one transaction, then hands them on."""
        if self.journal is not None:
            self.journal.record(path, stamp, rows)
        return rows

