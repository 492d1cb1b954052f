"""The published evaluation protocol, from a config file (evaluation/config.py) to every
table (Lukas et al., "SoK: How Robust is Image Classification Deep Neural Network
Watermarking?", IEEE S&P 2022, Sec. IV): per seed, the owner trains a clean model on their
share of the data and embeds each scheme by fine-tuning it; the attacker, holding a disjoint
share, runs every attack on every marked model; each attacked model is verified and its test
accuracy measured.

Everything lands in an output folder: the owner's models and keys (so a rerun verifies the
same marks), and `cells.jsonl`, one line per finished cell (owner model or attack), written
and synced before the next starts. A rerun after Ctrl-C or a crash reads it and does only
the cells not there: nothing finished is redone or lost. Each cell, model and key file is
named by a digest of the config parts it depends on: after a config change only the cells
it changes are redone, and nothing made under other settings is read back.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..attacks._data import Batches
from ..files.io import atomic_write
from ..schemes import get_scheme, scheme_of
from ..verification import verify
from .config import ProtocolConfig
from .evaluate import accuracy, thief_key
from .registry import Run, expand, parse_cli

JOURNAL = "cells.jsonl"
OWNER_IMAGES = "owner-images"  # a config value that stands for the owner's training images


@dataclass
class Task:
    """The data of one seed: the owner's and the attacker's disjoint shares, the test set."""

    owner: tuple[torch.Tensor, torch.Tensor]
    owner_images: torch.Tensor  # the owner's share as uint8 pixels (a key's image source)
    attacker: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    described: str


def load_task(config: ProtocolConfig, seed: int) -> Task:
    data = config.data
    if data["name"] == "cifar10":
        (x, y), (tx, ty) = _cifar10(data)
        mean, std, shape = CIFAR10_MEAN, CIFAR10_STD, (3, 32, 32)
    elif data["name"] == "fashion-mnist":
        from ..data import FASHION_MNIST_MEAN, FASHION_MNIST_STD, fashion_mnist

        (x, y), (tx, ty) = fashion_mnist("train"), fashion_mnist("test")
        mean, std, shape = FASHION_MNIST_MEAN, FASHION_MNIST_STD, (1, 28, 28)
    else:
        raise ValueError(f"data.name must be 'fashion-mnist' or 'cifar10', got "
                         f"{data['name']!r}")
    x, y = x[:data.get("train_limit")], y[:data.get("train_limit")]
    tx, ty = tx[:data.get("test_limit")], ty[:data.get("test_limit")]
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = max(1, round(len(x) * data["attacker_fraction"]))

    def norm(images):
        return (images.float() / 255 - torch.tensor(mean)[:, None, None]) / \
            torch.tensor(std)[:, None, None]

    return Task(owner=(norm(x[order[cut:]]), y[order[cut:]]), owner_images=x[order[cut:]],
                attacker=(norm(x[order[:cut]]), y[order[:cut]]), test=(norm(tx), ty),
                num_classes=10, shape=shape, mean=mean, std=std,
                described=f"{data['name']}: owner {len(x) - cut}, attacker {cut} "
                          f"(disjoint, seed {seed}), test {len(tx)} images")


# CIFAR-10's per-channel training-set mean and std (of the original images)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_ENV = "MLGUARD_CIFAR10"


def cifar10_path(data: dict) -> str:
    """data.path, else $MLGUARD_CIFAR10; ValueError saying how to give it when neither
    names an existing archive (or folder)."""
    path = data.get("path") or os.environ.get(CIFAR10_ENV)
    if not path:
        raise ValueError(f"data.name = \"cifar10\" needs the CIFAR-10 (JPEG) archive: set "
                         f"data.path in the config or the {CIFAR10_ENV} environment variable "
                         "(the Makefile sets it when it finds the archive beside the checkout)")
    if not Path(path).exists():
        where = "data.path" if data.get("path") else CIFAR10_ENV
        raise ValueError(f"{where} names {path!r}, which does not exist: point it at the "
                         "CIFAR-10 (JPEG) archive cifar10-jpeg.tar.gz or its folder")
    return path


def _cifar10(data: dict):
    from ..data import cifar10

    path = cifar10_path(data)
    out = []
    for split in ("train", "test"):
        part = cifar10(path, split)
        # the archive lists the images class by class: one fixed shuffle (the same for
        # every seed) so that train_limit / test_limit take every class
        order = torch.randperm(len(part), generator=torch.Generator().manual_seed(0))
        out.append((part.images[order], part.labels[order]))
    return out


class Journal:
    """The finished cells, one JSON line each, synced as written. A cell's id holds the
    digest of everything it depends on, so a changed config redoes exactly the cells it
    changes and never mixes in an old one."""

    def __init__(self, folder: Path):
        self.path, self.cells = folder / JOURNAL, {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    cell = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash: that cell is redone
                self.cells[cell["cell"]] = cell

    def done(self, cell: str) -> dict | None:
        return self.cells.get(cell)

    def add(self, cell: str, record: dict) -> dict:
        record = {"cell": cell, **record}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.cells[cell] = record
        return record


def digest(*parts) -> str:
    """12 hex digits naming a cell's inputs (config parts as JSON)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_protocol(config: ProtocolConfig, out: str | Path, progress=print) -> list[dict]:
    """Runs every cell the journal in `out` does not have yet; returns all cells' records."""
    from ..files.model import resolve_arch

    folder = Path(out)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    (folder / "keys").mkdir(exist_ok=True)
    journal = Journal(folder)
    arch = resolve_arch(config.owner["arch"], config.owner["arch_kwargs"] or None)
    runs = []
    for i, spec in enumerate(config.attacks):
        if isinstance(spec, str):
            runs += [r for s in parse_cli(spec) for r in expand(s, i)]
        else:
            params = {k: v for k, v in spec.items() if k != "attack"}
            runs += expand((spec["attack"], params), i)
    alpha, records = config.protocol["alpha"], []
    for seed in config.protocol["seeds"]:
        task = load_task(config, seed)
        test = Batches(task.test, batch_size=1000, shuffle=False, name="test")
        clean_id = digest(config.data, config.owner, seed)
        base = _clean_model(config, arch, task, seed, folder / "models" / f"clean-{clean_id}.pt")
        twin = _twin(config, arch, task, seed, base, folder / "models" / f"twin-{clean_id}.pt")
        twin_acc = accuracy(twin, test)
        references = _references(config, arch, task, seed, folder, clean_id)
        for label, entry in config.schemes.items():
            owner_id = digest(clean_id, label, entry)
            cell = f"{label}|seed={seed}|none|{digest(owner_id, alpha, 'twin')}"
            where = {"scheme": label, "scheme_name": entry["scheme"], "seed": seed}
            try:
                key, marked = _owner(config, arch, task, seed, label, entry, base, folder,
                                     owner_id, references)
                record = journal.done(cell)
                if record is None or "error" in record:  # a failed owner cell is retried
                    record = journal.add(cell, _owner_cell(
                        marked, twin, key, test, twin_acc, alpha, where, task, progress))
            except CELL_ERRORS as e:  # this scheme cannot run here: say so, go on
                records.append(_failed(journal, cell, where, "none", "", e, progress))
                continue
            records.append(record)
            if not record["detected"]:  # nothing to remove: every attack would "remove" it
                progress(f"seed {seed} {label}: the marked model itself is not detected at "
                         f"alpha {alpha:g} (p={record['p_value']:.2g}): its {len(runs)} "
                         f"attack(s) are not run (strengthen the embedding or the key)")
                continue
            marked_acc = record["accuracy"]
            for run in runs:
                cell = f"{label}|seed={seed}|{run.name}|{run.label}|{digest(owner_id, alpha)}"
                record = journal.done(cell)
                if record is None:
                    try:
                        record = journal.add(cell, _attack_cell(
                            run, marked, key, task, test, marked_acc, alpha, where, label))
                    except CELL_ERRORS as e:
                        record = _failed(journal, cell, where, run.name, run.label, e, progress)
                    else:
                        progress(f"seed {seed} {label} {run.name}"
                                 f"{f' {run.label}' if run.label else ''}: "
                                 f"acc {record['accuracy']:.2%} "
                                 f"{'DETECTED' if record['detected'] else 'not detected'} "
                                 f"p={record['p_value']:.2g} ({record['seconds']:.1f} s)")
                records.append(record)
    return records


# what a cell may raise for a reason of its own (an attack or a scheme that cannot handle
# this model or data); the cell is journaled as failed and the run goes on
CELL_ERRORS = (ValueError, TypeError, RuntimeError, NotImplementedError)


def _owner_cell(marked, twin, key, test, twin_acc, alpha, where, task, progress) -> dict:
    """The marked model and its clean twin (the same fine-tuning without the mark): the
    embedding cost is their difference in test accuracy."""
    marked_acc = accuracy(marked, test)
    mark, clean = verify(marked, key, alpha=alpha), verify(twin, key, alpha=alpha)
    progress(f"seed {where['seed']} {where['scheme']}: marked {marked_acc:.2%} (clean "
             f"twin {twin_acc:.2%}), {mark.matches}/{mark.total} p={mark.p_value:.2g}; "
             f"clean twin {clean.matches}/{clean.total}")
    return {**where, "attack": "none", "params": "", "accuracy": marked_acc,
            "clean_accuracy": twin_acc, "embedding_cost": twin_acc - marked_acc,
            **_verdict(mark), "clean_twin": _verdict(clean), "seconds": 0.0,
            "data": task.described}


def _failed(journal: Journal, cell: str, where: dict, attack: str, params: str, error,
            progress) -> dict:
    message = f"{type(error).__name__}: {error}"[:500]
    progress(f"seed {where['seed']} {where['scheme']} {attack} {params}: FAILED {message}")
    return journal.add(cell, {**where, "attack": attack, "params": params, "error": message})


def _verdict(v) -> dict:
    return {"matches": v.matches, "total": v.total, "p_value": v.p_value,
            "log10_p": v.log_p_value / math.log(10), "detected": v.detected}


def _attack_cell(run, marked, key, task, test, marked_acc, alpha, where, label) -> dict:
    supplied = {"data": lambda: {"data": task.attacker},
                "normalization": lambda: {"mean": task.mean, "std": task.std},
                "key": lambda: {"key": thief_key({label: key})}}
    run = _supplied(run, supplied)
    torch.manual_seed(where["seed"])
    start = time.perf_counter()
    attacked = run(marked)
    seconds = time.perf_counter() - start
    attacked.eval()
    acc = accuracy(attacked, test)
    verdict = verify(attacked, key, alpha=alpha)
    from .evaluate import _plain
    return {**where, "attack": run.name,
            "params": run.label, "accuracy": acc, "accuracy_loss": marked_acc - acc,
            **_verdict(verdict), "seconds": seconds,
            "info": _plain(getattr(attacked, "attack_info", {}))}


def _supplied(run: Run, supplied: dict) -> Run:
    """A copy of `run` (and its steps) given what it needs for this cell; the caller's
    parameters win. Runs are shared by all cells, so they are never changed."""
    given = {}
    for need in run.needs:
        given.update(supplied[need]())
    return replace(run, params={**given, **run.params},
                   steps=tuple(_supplied(step, supplied) for step in run.steps))


def _train(model: nn.Module, data, epochs: int, lr: float, batch_size: int, seed: int,
           embeddings=()) -> None:
    batches = Batches(data, batch_size, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for x, y in batches:
            for emb in embeddings:
                x, y = emb.batch(x, y)
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            for emb in embeddings:
                loss = loss + emb.loss(model, x, y)
            loss.backward()
            optimizer.step()
    model.eval()


def _clean_model(config, arch, task, seed, path: Path) -> nn.Module:
    """The owner's model before any mark, which every scheme's embedding starts from; cached."""
    torch.manual_seed(seed)
    model = arch()
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    owner = config.owner
    _train(model, task.owner, owner["epochs"], owner["lr"], owner["batch_size"], seed)
    _save(model, path)
    return model


def _twin(config, arch, task, seed, base: nn.Module, path: Path) -> nn.Module:
    """The clean twin: the clean model fine-tuned as every scheme's embedding is (same
    epochs, rate and data order) but without a mark; cached."""
    twin = arch()
    if path.exists():
        twin.load_state_dict(torch.load(path, weights_only=True))
        return twin.eval()
    twin.load_state_dict(base.state_dict())
    owner = config.owner
    _train(twin, task.owner, owner["embed_epochs"], owner["lr"], owner["batch_size"], seed)
    _save(twin, path)
    return twin


def _references(config, arch, task, seed, folder: Path, clean_id: str):
    """A callable giving `owner.references` models trained as the clean one but with other
    seeds (weights and data order): the independent models some schemes calibrate their
    null on. Trained on first use only, then cached."""
    made: list = []

    def get() -> list[nn.Module]:
        if not made:
            for r in range(1, config.owner["references"] + 1):
                path = folder / "models" / f"reference{r}-{clean_id}.pt"
                made.append(_clean_model(config, arch, task, seed * 1000 + r, path))
        return made

    return get


def _owner(config, arch, task, seed, label, entry, base, folder: Path, owner_id: str,
           references):
    """(key, marked model) of one scheme and seed: made once, then read back."""
    from ..keys.loading import load_key

    key_path = folder / "keys" / f"{label}-seed{seed}-{owner_id}.key"
    model_path = folder / "models" / f"{label}-seed{seed}-{owner_id}.pt"
    scheme = get_scheme(entry["scheme"])
    marked = arch()
    if key_path.exists() and model_path.exists():
        key = load_key(key_path)
        if scheme_of(key) is not scheme:
            raise ValueError(f"{key_path} holds a {scheme_of(key).name!r} key, the config "
                             f"says {entry['scheme']!r}")
        marked.load_state_dict(torch.load(model_path, weights_only=True))
        return key, marked.eval()
    marked.load_state_dict(base.state_dict())
    key = scheme.generate(**_generate_args(scheme, entry, task, marked, label, seed,
                                           references))
    key.save(key_path, overwrite=True)
    owner = config.owner
    _train(marked, task.owner, owner["embed_epochs"], owner["lr"], owner["batch_size"], seed,
           [scheme.embedding(key, **_embedding_args(scheme, entry, task))])
    _save(marked, model_path)
    return key, marked


def _generate_args(scheme, entry: dict, task: Task, model: nn.Module, label: str,
                   seed: int, references) -> dict:
    """The config's options (the value "owner-images" stands for the owner's training
    images, uint8), plus the task's facts that the scheme's generate() takes by name:
    num_classes, shape, mean, std, model (the owner's clean model), data (normalized),
    images and labels (the owner's share as uint8 pixels and classes), reference_models
    (models trained as the owner's, other seeds: made only when a scheme takes them). One
    rule for every scheme. The secret is derived from the label and seed, so a table can be
    reproduced: these keys are for research, never for protecting a model."""
    options = {k: v for k, v in entry.items() if k not in ("scheme", "embedding")}
    for name, value in options.items():
        if value == OWNER_IMAGES:  # e.g. source = "owner-images" for content/noise triggers
            options[name] = task.owner_images
    options.setdefault("secret", hashlib.sha256(f"mlguard-protocol/{label}/{seed}".encode())
                       .digest())
    facts = {"num_classes": lambda: task.num_classes, "shape": lambda: task.shape,
             "mean": lambda: task.mean, "std": lambda: task.std, "model": lambda: model,
             "data": lambda: task.owner, "images": lambda: task.owner_images,
             "labels": lambda: task.owner[1], "reference_models": references}
    takes = set(inspect.signature(scheme.generate).parameters)
    if hasattr(scheme.key_type, "generate"):  # a scheme that passes **options on to its key
        takes |= set(inspect.signature(scheme.key_type.generate).parameters)
    options.update({name: fact() for name, fact in facts.items()
                    if name in takes and name not in options})
    return options


def _embedding_args(scheme, entry: dict, task: Task) -> dict:
    """The config's embedding options, plus the owner's training data where the scheme's
    embedding() names it (EWE draws its watermark batches from `images`, `labels`)."""
    options = dict(entry.get("embedding", {}))
    takes = inspect.signature(scheme.embedding).parameters
    facts = {"images": lambda: task.owner_images, "labels": lambda: task.owner[1]}
    options.update({n: fact() for n, fact in facts.items() if n in takes and n not in options})
    return options


def _save(model: nn.Module, path: Path) -> None:
    with atomic_write(path) as f:  # a crash never leaves half a model to be read back
        torch.save(model.state_dict(), f)
