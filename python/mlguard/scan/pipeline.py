"""mlguard.scan(): check many model files against many keys, streaming.

The pipeline, per rank:

    reader threads (ThreadPoolExecutor)             main thread
    read file + SHA-256, decode safely,     --->    load weights in place into one module,
    reject NaN/inf, hash the weights,               one forward pass for all trigger keys,
    stage to the device (pinned buffer +            p-values, journal commit, progress
    side CUDA stream)

At most `prefetch` files are read ahead, so reading model i+1 overlaps checking model i;
file buffers are reused (BufferPool). Everything also runs on the CPU (no pinned memory, no
streams).

Memory: `memory_cap` bounds the bytes of model data the scan holds at once: files being read
(charged twice their size, for the file's bytes and the decoded tensors beside them), decoded
models waiting for their check (their tensors' storage, or the file buffer they view) and free
pooled buffers. Weight keys are checked many models per call (``models_per_call``); the cap
closes such a batch early, so peak memory stays within the cap + one model (a model larger
than the cap is still checked, alone) + a constant.

Durability: each file's rows are committed to the journal as soon as it is checked, and a
batch that has waited COMMIT_INTERVAL seconds is checked without waiting to fill, so the
journal never lags more than a few seconds behind the files read. On Ctrl-C the files in
flight are dropped and ScanInterrupted says how many files were checked.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from ..keys import load_key
from ..schemes.base import SCHEMES
from ..verification.verify import weights_sha256
from . import distributed, loading
from .buffers import BufferPool
from .checkers import (CHECKERS, CheckerOptions, LoadedModel, Outcome, arch_name,
                       checker_for, resolve_arch, scheme_of)
from .journal import Journal, file_stamp
from .result import ScanResult
from .rows import adjust, key_columns, make_row, name_keys, summary_line
from .staging import DeviceStager


MAX_INFLIGHT_BYTES = 4 << 30  # the default memory_cap: model bytes the scan holds at once
COMMIT_INTERVAL = 2.0  # seconds a partial batch may wait before it is checked and journaled


class ScanInterrupted(KeyboardInterrupt):
    """Ctrl-C during a scan: `checked` of `total` files were checked (and journaled, if a
    journal was given); the files in flight were dropped."""

    def __init__(self, checked: int, total: int):
        super().__init__(f"scan interrupted after {checked} of {total} files")
        self.checked, self.total = checked, total


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
         prefetch: int | None = None,
         memory_cap: int | None = None,
         reference=None) -> ScanResult:
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
        memory_cap: bytes of model data held at once (default MAX_INFLIGHT_BYTES, 4 GiB):
            files being read (twice their size while they decode), decoded models waiting
            for a batched check, reusable buffers. Peak memory stays within the cap + one
            model + a constant; a model larger than the cap is still checked, alone.
        reference: the owner's reference model (an nn.Module or weights.align.Reference),
            loaded once; weight keys then read each model after aligning it once to it, so
            permuted, rescaled or widened copies are found (trigger keys ignore it). Or a
            dict {key commitment: reference} for keys of different owners: each key is read
            against its own reference (keys not in it without one); each model is aligned
            once per distinct reference, for all the keys that share it.

    Returns:
        A ScanResult: a list of rows (dicts, columns in ``mlguard.scan.rows.COLUMNS``)
        ordered by path, then key, with ``.detections``, ``.errors``, ``.to_pandas()`` and
        an HTML view for notebooks.
        Each has the file's SHA-256 and its weights hash (``weights_sha256``, the hash
        verdicts and evidence reports cite), the key's id and commitment, matches/total, the exact
        p-value (and log10), the adjusted p-value, ``detected`` and ``error``: a file that
        cannot be checked gets one row per key with ``error`` naming the problem. Under
        torchrun every rank returns all rows.

    Raises:
        ScanInterrupted: (a KeyboardInterrupt) on Ctrl-C, saying how many files were checked;
            with a journal, rerunning the same scan resumes from them.
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
    memory_cap = MAX_INFLIGHT_BYTES if memory_cap is None else memory_cap
    if isinstance(memory_cap, bool) or not isinstance(memory_cap, int) or memory_cap < 1:
        raise ValueError(f"memory_cap must be an int >= 1 (bytes), got {memory_cap!r}")
    ranks = distributed.from_env()
    device = _resolve_device(device, ranks)
    key_list = load_keys(keys)
    factory = resolve_arch(arch, arch_kwargs)
    by_scheme = _keys_by_scheme(key_list)
    kinds = {scheme: checker_for(scheme) for scheme in by_scheme}
    needs_module = [s for s in by_scheme if getattr(kinds[s], "needs_module", False)]
    references = _references(reference, key_list)  # each traced and hashed once
    if needs_module and factory is None and not trust_torchscript:
        raise ValueError(f"arch is required for {', '.join(needs_module)} keys: state_dict "
                         "files do not say which network they belong to (pass "
                         "arch='package.module:factory', or --arch on the command line)")
    autocast = device.type == "cuda" if autocast is None else bool(autocast)
    batch_size = batch_size or (1024 if device.type == "cuda" else 64)
    groups = _groups_by_reference(by_scheme, kinds, key_list, references)
    checkers = {label: kinds[scheme](members, device,
                                     CheckerOptions(factory, batch_size, autocast, ref))
                for label, (scheme, ref, members) in groups.items()}
    by_scheme = {label: members for label, (_, _, members) in groups.items()}
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
            "precision": "bf16-autocast" if autocast and device.type == "cuda" else "fp32",
            # rows read with and without alignment (or to another reference) never mix
            "reference": _journal_reference(key_list, references)})
    try:
        rows, todo = _plan(files, key_list, journal_db)
        if journal_db is not None and rows and ranks.rank == 0:
            done = len(files) - len(todo)
            print(f"scan: resuming from journal {journal}: {done} of {len(files)} files already "
                  f"done, {len(todo)} to check", file=sys.stderr)
        runner = _Runner(key_list, by_scheme, checkers, device, journal_db, trust_torchscript,
                         memory_cap)
        rows += runner.run(todo, workers, prefetch, show, done_before=len(files) - len(todo))
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


def _references(reference, keys: list) -> list:
    """One Reference (or None) per key: `reference` for all of them, or a dict by key
    commitment; the same reference object is prepared once however many keys share it."""
    if reference is None:
        return [None] * len(keys)
    from ..weights.align import as_reference
    if not isinstance(reference, Mapping):
        prepared = as_reference(reference)
        return [prepared] * len(keys)
    commitments = [k.commitment() for k in keys]
    for name in reference:
        if name not in commitments:
            raise ValueError(f"reference: no key with commitment {str(name)[:16]!r} among the "
                             "keys (a per-key reference is a dict {key.commitment(): model})")
    prepared: dict[int, object] = {}
    for value in reference.values():
        if id(value) not in prepared:
            prepared[id(value)] = as_reference(value)
    return [prepared[id(reference[c])] if c in reference else None for c in commitments]


def _groups_by_reference(by_scheme: dict, kinds: dict, keys: list, references: list) -> dict:
    """label -> (scheme, reference, keys): one checker per scheme, split by reference for
    schemes that read through one (so each model is aligned once per reference)."""
    ref_of = {id(k): r for k, r in zip(keys, references)}
    groups: dict[str, tuple] = {}
    for scheme, members in by_scheme.items():
        aligns = getattr(getattr(kinds[scheme], "scheme", None), "aligns_to_reference", False)
        distinct = {id(ref_of[id(k)]): ref_of[id(k)] for k in members}
        if len(distinct) == 1:
            groups[scheme] = (scheme, next(iter(distinct.values())), members)
            continue
        if not aligns:  # it ignores references: one checker for all its keys
            groups[scheme] = (scheme, None, members)
            continue
        for ref in distinct.values():
            label = f"{scheme} (reference {ref.sha256[:12]})" if ref is not None \
                else f"{scheme} (no reference)"
            groups[label] = (scheme, ref, [k for k in members if ref_of[id(k)] is ref])
    return groups


def _journal_reference(keys: list, references: list) -> str | None:
    """The journal's record of the references: one hash for all keys (or None), else
    commitment:hash pairs, so rows read against other references never mix."""
    shas = [r.sha256 if r is not None else None for r in references]
    if len(set(shas)) == 1:
        return shas[0]
    return ",".join(f"{k.commitment()[:16]}:{sha}" for k, sha in zip(keys, shas))


def _keys_by_scheme(keys: list) -> dict[str, list]:
    by_scheme: dict[str, list] = {}
    for key in keys:
        by_scheme.setdefault(scheme_of(key), []).append(key)
    unknown = sorted(s for s in by_scheme if checker_for(s) is None)
    if unknown:
        known = sorted(set(CHECKERS) | set(SCHEMES))
        raise ValueError(f"keys: no checker for scheme(s) {unknown}; known: {known}")
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
          ) -> tuple[list[dict], list[tuple[str, tuple]]]:
    """(rows already in the journal, files still to check with their stamps, file_stamp)."""
    commitments = {k.commitment() for k in keys}
    done = journal.done() if journal is not None else {}
    finished, todo = [], []
    for path in files:
        try:
            stamp = file_stamp(path)
        except OSError:
            stamp = (-1,) * 5  # vanished or unreadable: the reader reports it
        if stamp[0] >= 0 and commitments <= done.get((path, stamp), set()):
            finished.append(path)
        else:
            todo.append((path, stamp))
    rows = journal.rows(finished, commitments) if finished else []
    return rows, todo


class _Runner:
    """The streaming loop for one rank's files (see the module docstring)."""

    def __init__(self, keys: list, by_scheme: dict[str, list], checkers: dict, device,
                 journal: Journal | None, trust_torchscript: bool, memory_cap: int):
        self.keys, self.by_scheme, self.checkers = keys, by_scheme, checkers
        self.labels = [(k.commitment(), scheme_of(k)) for k in keys]  # computed once
        self.device, self.journal = device, journal
        self.trust_torchscript = trust_torchscript
        self.memory_cap = memory_cap
        self.stager = DeviceStager(device)
        self.per_call = max(c.models_per_call for c in checkers.values())
        self.pool: BufferPool | None = None
        self.committed = 0  # files whose rows are committed (journaled, if journaling)

    def run(self, todo: list, workers: int, prefetch: int, show: bool,
            done_before: int = 0) -> list[dict]:
        """Rows of every file in `todo`; ScanInterrupted on Ctrl-C (see the module docstring)."""
        from tqdm.auto import tqdm  # a widget in notebooks

        rows: list[dict] = []
        stamps = dict(todo)
        cap = self.memory_cap
        self.pool = pool = BufferPool(keep=prefetch + workers + self.per_call)
        bar = tqdm(total=len(todo), unit="model", disable=not show, dynamic_ncols=True,
                   desc="scan")
        read_bytes, started = 0, time.perf_counter()
        queue = deque(todo)
        pending: deque[tuple[Future, int]] = deque()  # (future, bytes charged for it)
        batch: list[LoadedModel] = []
        batch_bytes, batch_since = 0, 0.0
        held = 0  # bytes charged to pending reads and to the models in `batch`
        executor = ThreadPoolExecutor(workers, thread_name_prefix="mlguard-scan")

        def refill() -> bool:
            """Reads ahead up to `prefetch` files within the cap; True if the cap stopped it."""
            nonlocal held
            while queue and len(pending) < prefetch:
                path, (size, *_) = queue[0]
                charge = 2 * max(size, 0)  # the file's bytes, then its tensors beside them
                pool.trim(max(0, cap - held - charge))  # unused buffers count as held too
                if (pending or batch) and held + pool.free_bytes() + charge > cap:
                    return True  # one file always goes, however large
                queue.popleft()
                pending.append((executor.submit(self._prepare, path), charge))
                held += charge
            return False

        try:
            with bar:
                refill()
                while pending:
                    future, charge = pending.popleft()
                    item = future.result()
                    held -= charge
                    done = 0  # the bar counts files checked (rows committed), not files read
                    if isinstance(item, _Failed):
                        rows += self._commit(item.path, stamps[item.path],
                                             self._error_rows(item))
                        done = 1
                    else:
                        if not batch:
                            batch_since = time.monotonic()
                        size = _held_bytes(item)
                        batch.append(item)
                        batch_bytes += size
                        held += size
                    read_bytes += item.size or 0
                    del item  # a checked model's tensors must not outlive its batch
                    capped = refill()
                    if batch and (len(batch) >= self.per_call or not pending or capped or
                                  time.monotonic() - batch_since >= COMMIT_INTERVAL):
                        rows += self._check(batch, stamps)
                        done += len(batch)
                        held -= batch_bytes
                        batch, batch_bytes = [], 0
                        refill()
                    rate = read_bytes / 1e6 / max(time.perf_counter() - started, 1e-9)
                    bar.set_postfix_str(f"read {rate:.0f} MB/s", refresh=False)
                    bar.update(done)
        except KeyboardInterrupt:
            executor.shutdown(wait=False, cancel_futures=True)  # drop the files in flight
            raise ScanInterrupted(done_before + self.committed, done_before + len(todo)) from None
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)  # no reads for a failed scan
            raise
        executor.shutdown(wait=True)
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
            model.state_dict, model.module = {}, None  # checked: free the tensors now
            if model.buffer is not None:  # nothing views the file's bytes any more
                self.pool.release(model.buffer)
                model.buffer = None
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
        self.committed += 1
        return rows



def _held_bytes(model: LoadedModel) -> int:
    """Bytes a loaded model keeps alive: the file buffer its tensors view, else the storage
    of its tensors (each storage once: tensors may share one)."""
    if model.buffer is not None:
        return model.buffer.numel()
    storages = {}
    for t in model.state_dict.values():
        if isinstance(t, torch.Tensor):
            storage = t.untyped_storage()
            storages[(storage.device, storage.data_ptr())] = storage.nbytes()
    return sum(storages.values())
