"""The extraction zoo (issue 21, format in docs/extraction_zoo.md): victims carrying an Adi
trigger key and a Uchida weight key, the models stolen from each by every extraction attack,
a fine-tuned derived copy, and >= 60 independent models that never saw the owner's data (the
null every ownership evidence is measured against). Every scheme of issue 21 is measured on
the SAME models by benchmarks/bench_extraction_evidence.py.

    OMP_NUM_THREADS=1 PYTHONPATH=python python benchmarks/extraction_zoo.py \
        --dataset fashion-mnist --out /work/zoo/fashion-mnist

Order: victims, then per victim its stolen and derived models, then the independents;
manifest.partial.json is rewritten after each model (others may start on it) and
manifest.json is written last, atomically. A rerun keeps every model already listed in
manifest.partial.json whose file exists (an interrupted run resumes).

Attack budgets: configs/fashion_mnist.toml (WRT's configs scaled to a CPU, Lukas et al.,
IEEE S&P 2022): retrain 10 epochs (hard and soft labels), knockoff 4, transfer 5 (all layers
trained), distill 10 (T=4), RTAL 5 then distill 10; the attacker uses only the `attacker`
split (knockoff: grey 28x28 CIFAR-10 training images instead, another distribution).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import zoo_archs  # noqa: E402  (the zoo's own architectures, named "zoo_archs:<factory>")

CIFAR_SHUFFLE_SEED = 2021  # the split ranges index the CIFAR-10 sets in this fixed order
CIFAR_ARCHIVE = Path(os.environ.get("MLGUARD_CIFAR10", "/work/shared/data/cifar10-jpeg.tar.gz"))

# [start, stop) ranges: owner/attacker/independent index the official TRAIN set, public/eval
# the TEST set (docs/extraction_zoo.md).
SPLITS = {
    "fashion-mnist": {"owner": [0, 20000], "attacker": [20000, 40000],
                      "independent": [40000, 60000], "public": [0, 5000], "eval": [5000, 10000]},
    "cifar10": {"owner": [0, 17000], "attacker": [17000, 34000],
                "independent": [34000, 50000], "public": [0, 5000], "eval": [5000, 10000]},
    # torchvision resnet18 on subsets (as bench_free_transforms.py: 5,000 owner images); the
    # independent range is cifar10's, so that zoo's independents can serve as this one's
    "cifar10-resnet18": {"owner": [0, 5000], "attacker": [17000, 22000],
                         "independent": [34000, 50000], "public": [0, 5000],
                         "eval": [5000, 10000]},
}
SPLIT_OF = {"owner": "train", "attacker": "train", "independent": "train", "public": "test",
            "eval": "test"}
DATASETS = {
    "fashion-mnist": {"victim": "mlguard.cli.demo:small_cnn", "xarch": "zoo_archs:mlp",
                      "others": ["zoo_archs:narrow_cnn", "zoo_archs:mlp", "zoo_archs:lenet"],
                      "shape": [1, 28, 28], "weight_target": "7.weight"},
    "cifar10": {"victim": "zoo_archs:cifar_cnn", "xarch": "zoo_archs:cifar_mlp",
                "others": ["zoo_archs:cifar_narrow_cnn", "zoo_archs:cifar_mlp"],
                "shape": [3, 32, 32], "weight_target": "7.weight"},
    "cifar10-resnet18": {"victim": "zoo_archs:cifar_resnet18", "xarch": "zoo_archs:cifar_cnn",
                         "others": ["zoo_archs:cifar_cnn", "zoo_archs:cifar_narrow_cnn"],
                         "shape": [3, 32, 32], "weight_target": "layer3.0.conv1.weight"},
}
# Per-model cost caps (images x epochs, at least 2 epochs) for the independents: each stays
# ~10-30 s on the shared 2-core CPU (about a quarter of a core each at load 8-10).
INDEP_WORK = {"mlguard.cli.demo:small_cnn": 12000, "zoo_archs:narrow_cnn": 16000,
              "zoo_archs:mlp": 30000, "zoo_archs:lenet": 20000, "zoo_archs:wide_cnn": 10000,
              "zoo_archs:cifar_cnn": 20000, "zoo_archs:cifar_narrow_cnn": 30000,
              "zoo_archs:cifar_mlp": 30000, "zoo_archs:cifar_resnet18": 25000}


# -- data -----------------------------------------------------------------------------------

def normalization(dataset: str) -> tuple[tuple, tuple]:
    from mlguard import data
    if dataset == "fashion-mnist":
        return tuple(data.FASHION_MNIST_MEAN), tuple(data.FASHION_MNIST_STD)
    return (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def loader_record(dataset: str) -> dict:
    if dataset == "fashion-mnist":
        return {"function": "mlguard.data.fashion_mnist", "args": {"split": "<train|test>"}}
    return {"function": "mlguard.data.cifar10",
            "args": {"path": str(CIFAR_ARCHIVE), "split": "<train|test>"},
            "shuffle": f"torch.randperm(n, generator=torch.Generator().manual_seed("
                       f"{CIFAR_SHUFFLE_SEED}))"}


def raw_sets(dataset: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"train": (uint8 images, labels), "test": ...} as mlguard.data loads them."""
    from mlguard import data
    if dataset == "fashion-mnist":
        return {s: data.fashion_mnist(s) for s in ("train", "test")}
    out = {}
    for s in ("train", "test"):  # the archive is sorted by class: index ranges need a shuffle
        ims = data.cifar10(CIFAR_ARCHIVE, s)
        order = torch.randperm(len(ims.labels), generator=torch.Generator().manual_seed(
            CIFAR_SHUFFLE_SEED))
        out[s] = (ims.images[order], ims.labels[order])
    return out


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean)[:, None, None]
    s = torch.tensor(std)[:, None, None]
    return (images.float() / 255.0 - m) / s


def split_tensors(dataset: str, split: dict | None = None, limit: int | None = None
                  ) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """{split name: (uint8 images, normalized float images, labels)}; `limit` keeps the first
    `limit` of each split (the tiny test zoo)."""
    split = split or SPLITS[dataset]
    mean, std = normalization(dataset)
    sets = raw_sets(dataset)
    out = {}
    for name, (a, b) in split.items():
        x, y = sets[SPLIT_OF[name]]
        stop = b if limit is None else min(b, a + limit)
        out[name] = (x[a:stop], normalize(x[a:stop], mean, std), y[a:stop])
    return out


def transfer_set(dataset: str, count: int) -> torch.Tensor:
    """Knockoff's images of another distribution, normalized as the victim's inputs, `count`
    drawn at random (seed 21): Fashion-MNIST <- grey 28x28 CIFAR-10 training images; CIFAR-10 <- Fashion-MNIST
    training images upsampled to 32x32 on three channels."""
    from mlguard import data
    mean, std = normalization(dataset)
    if dataset == "fashion-mnist":
        if not CIFAR_ARCHIVE.exists():
            raise FileNotFoundError(f"knockoff's transfer set needs CIFAR-10 at {CIFAR_ARCHIVE} "
                                    "(or set MLGUARD_CIFAR10)")
        images = data.cifar10(CIFAR_ARCHIVE, "train").images  # sorted by class: draw
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(21))[:count]
        rgb = images[pick].float()
        grey = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])[:, None]
        small = F.interpolate(grey, size=(28, 28), mode="bilinear", antialias=True,
                              align_corners=False)
        return normalize(small.round().clamp(0, 255), mean, std)
    x, _ = data.fashion_mnist("train")
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(21))[:count]
    big = F.interpolate(x[pick].float(), size=(32, 32), mode="bilinear", align_corners=False)
    return normalize(big.round().clamp(0, 255).repeat(1, 3, 1, 1), mean, std)


# -- models ---------------------------------------------------------------------------------

def build(arch: str) -> torch.nn.Module:
    from mlguard.files.model import resolve_arch
    return resolve_arch(arch)()


def load_model(arch: str, file) -> torch.nn.Module:
    """A zoo model: the `arch` factory's network with the safetensors `file`, in eval mode."""
    from safetensors.torch import load_file
    model = build(arch)
    model.load_state_dict(load_file(str(file)))
    return model.eval()


@torch.inference_mode()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum(int((model(xb).argmax(1) == yb).sum())
                  for xb, yb in zip(x.split(1000), y.split(1000)))
    return correct / len(y)


def train_plain(model, images_u8, labels, epochs: int, seed: int, mean, std) -> None:
    """Adam 1e-3, batch 128, seeded data order (mlguard.cli.demo.train's loop)."""
    from mlguard import data
    loader = data.DeviceLoader(images_u8, labels, 128, device="cpu", augment=False, mean=mean,
                               std=std, channels_last=False, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    model.eval()


def train_victim(arch: str, images_u8, labels, epochs: int, seed: int, keys, mean, std):
    """From scratch on the owner split with the Adi triggers mixed into every batch
    (TriggerMixer, 16 per batch of 128) and the weight watermark's loss (strength 0.01), as
    benchmarks/fashion_models.py's owner_model."""
    from mlguard import TriggerMixer, WeightWatermark
    from mlguard.cli.demo import batches
    torch.manual_seed(seed)
    model = build(arch)
    mixer = TriggerMixer(keys["adi"], per_batch=16)
    mark = WeightWatermark(keys["uchida"], strength=0.01)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for epoch in range(epochs):
        order = torch.Generator().manual_seed(seed * 1000 + epoch)
        for x, y in batches(images_u8, labels, 128, order, mean=mean, std=std):
            x, y = mixer(x, y)
            loss = F.cross_entropy(model(x), y) + mark.loss(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def victim_keys(dataset: str, seed: int, shape, target: str):
    """The victim's Adi key (abstract, 100 triggers) and Uchida key (256 bits on `target`),
    from fixed secrets: a rerun makes the same keys."""
    from mlguard import TriggerKey, WeightKey
    mean, std = normalization(dataset)
    def secret(what: str) -> bytes:
        return hashlib.sha256(f"zoo/{dataset}/victim-s{seed}/{what}".encode()).digest()

    adi = TriggerKey.generate(num_classes=10, size=100, shape=tuple(shape), kind="abstract",
                              mean=mean, std=std, secret=secret("adi"))
    uchida = WeightKey.generate(bits=256, targets=(target,), secret=secret("uchida"))
    return {"adi": adi, "uchida": uchida}


def plain(value):
    """attack_info made JSON-safe (tuples, numpy and torch scalars, callables)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return getattr(value, "__name__", repr(value))


# -- the zoo --------------------------------------------------------------------------------

ROLE_ORDER = {"victim": 0, "stolen": 1, "derived": 1, "independent": 2}


class Zoo:
    """The folder being built: models saved as safetensors, this process's entries in
    manifest.partial.<part>.json and the union of all parts in manifest.partial.json,
    rewritten after each model (the victims-and-stolen part and the independents part may
    run as two processes); entries already listed with their file present are kept."""

    def __init__(self, out: Path, header: dict, log, part: str = "all"):
        self.out, self.header, self.log, self.part = out, header, log, part
        out.mkdir(parents=True, exist_ok=True)
        self.models: list[dict] = []
        own = out / f"manifest.partial.{part}.json"  # attacks whose training diverged
        self.failed: list[dict] = json.loads(own.read_text()).get("failed", []) \
            if own.exists() else []
        self.kept = {m["name"]: m for m in self.union() if (out / m["file"]).exists()}

    def union(self) -> list[dict]:
        """Every part's entries (and a single-part run's manifest.partial.json): victims,
        then stolen and derived (in build order), then independents by name."""
        seen: dict[str, dict] = {}
        for path in [self.out / "manifest.partial.json",
                     *sorted(self.out.glob("manifest.partial.*.json"))]:
            if path.exists():
                for m in json.loads(path.read_text())["models"]:
                    seen[m["name"]] = m
        return sorted(seen.values(), key=lambda m: (ROLE_ORDER[m["role"]], m["name"]
                                                    if m["role"] == "independent" else ""))

    def union_failed(self) -> list[dict]:
        """Every part's failed attacks ({"name", "error"}), by name."""
        seen = {}
        for path in sorted(self.out.glob("manifest.partial.*.json")):
            for f in json.loads(path.read_text()).get("failed", []):
                seen[f["name"]] = f
        return [seen[n] for n in sorted(seen)]

    def fail(self, name: str, error: Exception) -> None:
        """An attack that could not give a model (its training diverged): listed under
        "failed" with the error, never as a model; a rerun does not retry it."""
        self.failed.append({"name": name, "error": str(error)})
        self._write()
        self.log(f"{name:<28} FAILED: {error}")

    def has_failed(self, name: str) -> bool:
        return any(f["name"] == name for f in self.union_failed())

    def has(self, name: str) -> dict | None:
        entry = self.kept.get(name)
        if entry is None and self.part.startswith("independents"):  # another process's?
            entry = next((m for m in self.union() if m["name"] == name
                          and (self.out / m["file"]).exists()), None)
            return entry  # listed in that process's part, not in this one's
        if entry is not None and entry not in self.models:
            self.models.append(entry)
            self._write()
        return entry

    def load(self, entry: dict) -> torch.nn.Module:
        return load_model(entry["arch"], self.out / entry["file"])

    def add(self, model: torch.nn.Module, entry: dict) -> dict:
        from safetensors.torch import save_file
        entry = {"file": f"{entry['name']}.safetensors", **entry}
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(self.out / entry["file"]))
        self.models.append(entry)
        self._write()
        self.log(f"{entry['name']:<28} {entry['role']:<11} acc {100 * entry['test_accuracy']:.2f}%"
                 + (f" loss {100 * entry['stealing_loss']:+.2f} pts" if "stealing_loss" in entry
                    else "") + f"  {entry['seconds']:.0f} s")
        return entry

    def _dump(self, name: str, models: list[dict], extra: dict | None = None) -> None:
        tmp = self.out / (name + ".tmp")
        tmp.write_text(json.dumps({**self.header, **(extra or {}), "models": models},
                                  indent=1) + "\n")
        tmp.replace(self.out / name)

    def _write(self) -> None:
        import fcntl
        self._dump(f"manifest.partial.{self.part}.json", self.models,
                   {"failed": self.failed} if self.failed else None)
        with open(self.out / ".manifest.lock", "w") as lock:  # the two parts merge in turn
            fcntl.flock(lock, fcntl.LOCK_EX)
            failed = self.union_failed()
            self._dump("manifest.partial.json", self.union(),
                       {"failed": failed} if failed else None)

    def finish(self, extra: dict) -> None:
        """manifest.json (atomically, last): the union of every part."""
        failed = self.union_failed()
        self._dump("manifest.json", self.union(), {**extra, **({"failed": failed}
                                                              if failed else {})})


def rtal_teacher(victim, attacker, budget: dict, seed: int):
    """The first step of the stacked theft: RTAL on the attacker's labelled images."""
    from mlguard import attacks
    return attacks.fine_tune(victim, attacker, "RTAL", epochs=budget["rtal"], seed=seed)


def rtal_then_distill(victim, attacker, budget: dict, seed: int):
    """The stacked theft: RTAL on the attacker's labelled images, then distillation of that
    teacher into a fresh network. Returns (teacher, copy)."""
    from mlguard import attacks
    first = rtal_teacher(victim, attacker, budget, seed)
    second = attacks.distill(first, attacker, epochs=budget["distill"], temperature=4.0,
                             seed=seed)
    second.attack_info = {"steps": [{"attack": "rtal", **first.attack_info},
                                    {"attack": "distill", **second.attack_info}]}
    return first, second


def stolen_specs(budget: dict, xarch: str):
    """(name, attack, function(victim, attacker (x, y), transfer x, seed) -> model)."""
    from mlguard import attacks
    b = budget

    def rtal_distill(v, a, _t, s):
        return rtal_then_distill(v, a, b, s)[1]

    return [
        ("retrain-hard", "retrain",
         lambda v, a, _t, s: attacks.retrain(v, a, labels="hard", epochs=b["retrain"], seed=s)),
        ("retrain-soft", "retrain",
         lambda v, a, _t, s: attacks.retrain(v, a, labels="soft", epochs=b["retrain"], seed=s)),
        ("knockoff", "knockoff",
         lambda v, _a, t, s: attacks.knockoff(v, (t, torch.zeros(len(t), dtype=torch.long)),
                                              epochs=b["knockoff"], seed=s)),
        ("transfer", "transfer",
         lambda v, a, _t, s: attacks.transfer(v, a, freeze=False, epochs=b["transfer"], seed=s)),
        ("distill", "distill",
         lambda v, a, _t, s: attacks.distill(v, a, epochs=b["distill"], temperature=4.0, seed=s)),
        ("rtal-distill", "rtal+distill", rtal_distill),
        (f"retrain-{xarch.split(':')[1]}", "retrain-xarch",
         lambda v, a, _t, s: attacks.retrain(v, a, arch=build_factory(xarch),
                                             epochs=b["retrain"], seed=s)),
    ]


def build_factory(arch: str):
    from mlguard.files.model import resolve_arch
    factory = resolve_arch(arch)
    factory.__name__ = arch
    return factory


def independent_plan(dataset: str, count: int, pool: int, tiny: bool) -> list[dict]:
    """`count` independents: seeds 100.., architectures cycling victim, victim, others...,
    subset 5k-20k of the independent split, 2-8 epochs, capped per architecture (INDEP_WORK)."""
    cfg = DATASETS[dataset]
    cycle = [cfg["victim"], cfg["victim"], *cfg["others"]]
    plan = []
    for i in range(count):
        seed = 100 + i
        rng = np.random.default_rng(seed)
        arch = cycle[i % len(cycle)]
        subset = int(rng.choice([5000, 5000, 8000, 10000, 12000, 20000]))
        epochs = int(rng.integers(2, 9))
        if tiny:
            subset, epochs = min(subset, pool), 1
        subset = min(subset, pool)
        epochs = max(2 if not tiny else 1, min(epochs, INDEP_WORK[arch] // subset))
        plan.append({"name": f"indep-{i:02d}", "arch": arch, "seed": seed, "subset": subset,
                     "epochs": epochs})
    return plan


# "wrt-cpu": configs/fashion_mnist.toml's budgets (WRT's, scaled to a CPU). "shared-cpu":
# what the 2-core machine shared by ~10 processes allowed on 2026-12-06 (about a quarter
# of a core): the same attacks with fewer epochs, each still under 5 points of stealing loss
# where the attack can be (the manifest records the budget and every model's loss).
BUDGETS = {
    "wrt-cpu": {"victim": 6, "retrain": 10, "knockoff": 4, "transfer": 5, "distill": 10,
             "rtal": 5, "derived": 2, "transfer_images": 20000,
                "attacker_images": None},
    "shared-cpu": {"victim": 6, "retrain": 2, "knockoff": 2, "transfer": 1, "distill": 2,
                   "rtal": 1, "derived": 1, "transfer_images": 10000,
                   "attacker_images": 10000},
    # cifar10-resnet18: wrt-cpu with a 10-epoch victim (5,000 images) and a knockoff transfer
    # set of 5,000 images (a resnet18 epoch on 5,000 images is ~40 s of an idle core)
    "wrt-cpu-subset": {"victim": 10, "retrain": 10, "knockoff": 4, "transfer": 5,
                       "distill": 10, "rtal": 5, "derived": 2, "transfer_images": 5000,
                       "attacker_images": None},
    # the same with a victim trained three times as long (30 epochs): does a better-trained
    # victim leave a trace that survives RTAL then distillation?
    "wrt-cpu-subset-30": {"victim": 30, "retrain": 10, "knockoff": 4, "transfer": 5,
                          "distill": 10, "rtal": 5, "derived": 2, "transfer_images": 5000,
                          "attacker_images": None},
    "tiny": {"victim": 1, "retrain": 1, "knockoff": 1, "transfer": 1, "distill": 1,
             "rtal": 1, "derived": 1, "transfer_images": 300,
             "attacker_images": None},
}


def build_zoo(dataset: str, out: Path, seeds=(0, 1, 2), independents: int = 60,
              tiny: bool = False, budget: str = "shared-cpu", log=print,
              parts=("owner", "independents"), finish: bool = True,
              reverse: bool = False, attacks_only=None) -> dict | None:
    """Builds the zoo's `parts` ("owner": victims, stolen and derived models;
    "independents") in this process; `finish` writes manifest.json once all are listed.
    `attacks_only`: build only these stolen models (their short names, e.g. "rtal-distill")
    and no derived one; a partial zoo, read with `partial=True`."""
    cfg = DATASETS[dataset]
    budget = {"name": "tiny" if tiny else budget, **BUDGETS["tiny" if tiny else budget]}
    limit = 300 if tiny else None
    mean, std = normalization(dataset)
    start = time.perf_counter()
    split = SPLITS[dataset]
    (out).mkdir(parents=True, exist_ok=True)
    (out / "split.json").write_text(json.dumps(
        {**split, "of": SPLIT_OF, "loader": loader_record(dataset),
         "limit": limit}, indent=1) + "\n")
    header = {"dataset": dataset, "normalization": {"mean": list(mean), "std": list(std)},
              "input_shape": cfg["shape"], "num_classes": 10, "split": "split.json",
              "budget": budget}
    part = "+".join(parts) + ("" if "owner" not in parts or tuple(seeds) == (0, 1, 2)
                              else "-s" + "-".join(map(str, seeds)))  # one process per seed
    if reverse:
        part += "-reversed"
    zoo = Zoo(out, header, log, part=part)
    sets = split_tensors(dataset, limit=limit)
    if "owner" in parts:
        build_owner_part(zoo, dataset, sets, seeds, budget, cfg, mean, std, attacks_only)
    if "independents" in parts:
        build_independents(zoo, dataset, sets, independents, tiny, mean, std)
    if not finish:
        return None
    expected = len(seeds) * 9 + independents
    listed, failed = zoo.union(), zoo.union_failed()
    if len(listed) + len(failed) != expected:
        raise RuntimeError(f"the zoo lists {len(listed)} models and {len(failed)} failed "
                           f"attacks, {expected} expected: a part is missing (run it, then "
                           "this again)")
    zoo.finish({"wall_seconds_last_run": time.perf_counter() - start,
                "load_average_at_end": list(os.getloadavg())})
    return json.loads((out / "manifest.json").read_text())


def build_owner_part(zoo: Zoo, dataset, sets, seeds, budget, cfg, mean, std,
                     attacks_only=None) -> None:
    from mlguard.attacks import TrainingDiverged
    out = zoo.out
    ev_x, ev_y = sets["eval"][1], sets["eval"][2]
    n = budget["attacker_images"] or len(sets["attacker"][2])
    attacker = (sets["attacker"][1][:n], sets["attacker"][2][:n])

    victims = {}
    for seed in seeds:
        name = f"victim-s{seed}"
        keys = victim_keys(dataset, seed, cfg["shape"], cfg["weight_target"])
        key_files = [f"{name}.adi.key", f"{name}.uchida.key"]
        entry = zoo.has(name)
        if entry is None:
            t = time.perf_counter()
            model = train_victim(cfg["victim"], sets["owner"][0], sets["owner"][2],
                                 budget["victim"], seed, keys, mean, std)
            for kind, file in zip(("adi", "uchida"), key_files):
                keys[kind].save(out / file, overwrite=True)
            entry = zoo.add(model, {"name": name, "arch": cfg["victim"], "role": "victim",
                                    "seed": seed, "test_accuracy": accuracy(model, ev_x, ev_y),
                                    "keys": key_files, "epochs": budget["victim"],
                                    "seconds": time.perf_counter() - t})
        victims[name] = (zoo.load(entry), entry)

    transfer_x = None
    for seed in seeds:
        vname = f"victim-s{seed}"
        victim, ventry = victims[vname]
        for short, attack, steal in stolen_specs(budget, cfg["xarch"]):
            name = f"stolen-{short}-s{seed}"
            if zoo.has(name) or zoo.has_failed(name) or (attacks_only is not None
                                                         and short not in attacks_only):
                continue
            if attack == "knockoff" and transfer_x is None:
                transfer_x = transfer_set(dataset, budget["transfer_images"])
            t = time.perf_counter()
            torch.manual_seed(seed)
            try:
                model = steal(victim, attacker, transfer_x, seed).eval()
            except TrainingDiverged as e:  # reported and skipped; the zoo goes on
                zoo.fail(name, e)
                continue
            arch = cfg["xarch"] if attack == "retrain-xarch" else cfg["victim"]
            acc = accuracy(model, ev_x, ev_y)
            zoo.add(model, {"name": name, "arch": arch, "role": "stolen", "victim": vname,
                            "attack": attack, "attack_info": plain(model.attack_info),
                            "seed": seed, "test_accuracy": acc,
                            "stealing_loss": ventry["test_accuracy"] - acc,
                            "seconds": time.perf_counter() - t})
        name = f"derived-finetune-s{seed}"
        if not zoo.has(name) and attacks_only is None:
            from mlguard import attacks
            t = time.perf_counter()
            model = attacks.fine_tune(victim, attacker, "FTAL", epochs=budget["derived"],
                                      seed=seed).eval()
            acc = accuracy(model, ev_x, ev_y)
            zoo.add(model, {"name": name, "arch": cfg["victim"], "role": "derived",
                            "victim": vname, "attack": "ftal",
                            "attack_info": plain(model.attack_info), "seed": seed,
                            "test_accuracy": acc, "stealing_loss": ventry["test_accuracy"] - acc,
                            "seconds": time.perf_counter() - t})


def build_independents(zoo: Zoo, dataset, sets, independents, tiny, mean, std) -> None:
    ev_x, ev_y = sets["eval"][1], sets["eval"][2]
    pool_u8, pool_y = sets["independent"][0], sets["independent"][2]
    plans = independent_plan(dataset, independents, len(pool_y), tiny)
    if zoo.part.endswith("-reversed"):  # a second process from the other end
        plans = plans[::-1]
    for plan in plans:
        if zoo.has(plan["name"]):
            continue
        t = time.perf_counter()
        pick = torch.randperm(len(pool_y), generator=torch.Generator().manual_seed(
            plan["seed"]))[:plan["subset"]]
        torch.manual_seed(plan["seed"])
        model = build(plan["arch"])
        train_plain(model, pool_u8[pick], pool_y[pick], plan["epochs"], plan["seed"], mean, std)
        how = (f"{plan['arch'].split(':')[1]}, {plan['subset']} images of independent, seed "
               f"{plan['seed']}, {plan['epochs']} epochs")
        zoo.add(model, {"name": plan["name"], "arch": plan["arch"], "role": "independent",
                        "seed": plan["seed"], "how": how, "subset": plan["subset"],
                        "epochs": plan["epochs"], "test_accuracy": accuracy(model, ev_x, ev_y),
                        "seconds": time.perf_counter() - t})


# -- reading it -----------------------------------------------------------------------------

def read_manifest(root) -> dict:
    """The zoo's manifest.json, or manifest.partial.json while it is built (or when only
    some parts were); FileNotFoundError naming both when neither exists."""
    root = Path(root)
    for name in ("manifest.json", "manifest.partial.json"):
        if (root / name).exists():
            return json.loads((root / name).read_text())
    raise FileNotFoundError(f"{root} has no manifest.json nor manifest.partial.json")


def manifest_of_zoo_argument(parser, root) -> dict:
    """read_manifest(root) for a benchmark's --zoo: a missing zoo is a usage error."""
    try:
        return read_manifest(root)
    except FileNotFoundError as e:
        parser.error(f"--zoo: {e}")


def load_zoo(root, models: bool = True, partial: bool = False) -> dict:
    """The zoo at `root`: its manifest (a dict) with, per model entry, "model" (the network
    rebuilt from its arch and safetensors file, in eval mode) when `models`, and
    "tensors": {split: (normalized float images, labels)} for every split of split.json.
    `partial=True` reads manifest.partial.json while the zoo is still being built."""
    from safetensors.torch import load_file
    root = Path(root)
    path = root / ("manifest.partial.json" if partial else "manifest.json")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist"
                                + ("" if partial else " (still building? try partial=True)"))
    manifest = json.loads(path.read_text())
    split = json.loads((root / manifest["split"]).read_text())
    ranges = {k: v for k, v in split.items() if k in SPLIT_OF}
    sets = split_tensors(manifest["dataset"], ranges, split.get("limit"))
    manifest["tensors"] = {name: (x, y) for name, (_u8, x, y) in sets.items()}
    if models:
        for entry in manifest["models"]:
            model = build(entry["arch"])
            model.load_state_dict(load_file(root / entry["file"]))
            entry["model"] = model.eval()
    return manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    p.add_argument("--out", required=True, help="the zoo folder, e.g. /work/zoo/fashion-mnist")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="victim seeds")
    p.add_argument("--independents", type=int, default=60)
    p.add_argument("--tiny", action="store_true",
                   help="300 images per split, 1 epoch everywhere (tests only)")
    p.add_argument("--budget", choices=[b for b in BUDGETS if b != "tiny"], default="shared-cpu",
                   help="attack epochs (see BUDGETS)")
    p.add_argument("--part", choices=["all", "owner", "independents"], default="all",
                   help="build only one part (--parallel runs the independents this way)")
    p.add_argument("--reverse", action="store_true",
                   help="with --part independents: from the last one down (a second process)")
    p.add_argument("--parallel", action="store_true",
                   help="build the independents in a second process at the same time")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--attacks", nargs="+", default=None, metavar="NAME",
                   help="with --part owner: build only these stolen models (of "
                        "retrain-hard retrain-soft knockoff transfer distill rtal-distill "
                        "retrain-<xarch>) and no derived one; read the zoo with --partial")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()

    def log(text):
        print(f"[{time.time() - started:6.0f} s] {text}", flush=True)

    out = Path(args.out)
    common = (args.dataset, out, tuple(args.seeds), args.independents, args.tiny, args.budget)
    if args.attacks is not None:
        known = {short for short, _a, _s in stolen_specs(BUDGETS["tiny"],
                                                         DATASETS[args.dataset]["xarch"])}
        if args.part != "owner" or not set(args.attacks) <= known:
            p.error(f"--attacks needs --part owner and names of {sorted(known)}, got "
                    f"--part {args.part} --attacks {' '.join(args.attacks)}")
    if args.part != "all":
        build_zoo(*common, log, parts=(args.part,), finish=False, reverse=args.reverse,
                  attacks_only=args.attacks)
        return 0
    # Two processes (victims and stolen models here; independents in a child): twice the
    # share of an oversubscribed CPU, and no shared global RNG between the two halves.
    child = subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--part",
                              "independents"]) if args.parallel else None
    build_zoo(*common, log, parts=("owner",) if child else ("owner", "independents"),
              finish=child is None)
    if child is not None:
        if child.wait() != 0:
            raise SystemExit(f"the independents' process failed (exit {child.returncode})")
        build_zoo(*common, log, parts=(), finish=True)
    manifest = json.loads((out / "manifest.json").read_text())
    log(f"{len(manifest['models'])} models in {args.out}; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
