"""The evaluation protocol's config file (TOML), read into a checked ProtocolConfig.

    # top-level keys come before the first [table]
    attacks = ["ftal:1", "prune:0.5", "rtal:2+distill:1", {attack = "prune", amount = [0.7, 0.9]}]

    [data]                      # the task; the attacker holds a share the owner never trains on
    name = "fashion-mnist"      # or "cifar10": the JPEG archive at path (default: the
                                # MLGUARD_CIFAR10 environment variable the Makefile sets)
    train_limit = 12000         # optional: the first N training / test images
    test_limit = 2000
    attacker_fraction = 0.333   # WRT's split: a third for the attacker

    [owner]                     # how the owner trains: a clean model, then each scheme's
    arch = "mlguard.cli.demo:small_cnn"   # embedding by fine-tuning it (WRT's protocol)
    epochs = 3
    embed_epochs = 2
    lr = 1e-3
    batch_size = 128
    references = 4              # independent models for schemes whose null is calibrated

    [protocol]
    seeds = [0, 1, 2]           # every owner model, key and attack once per seed
    alpha = 1e-6
    max_accuracy_loss = 0.05    # an attack removes a mark: not detected and loss < 5 points

    [schemes.adi]               # a label -> a registered scheme and its generate() options
    scheme = "trigger-set"
    kind = "abstract"
    size = 100
    embedding = {per_batch = 20}   # optional: options of the scheme's embedding()

    [schemes.content]
    scheme = "trigger-set"
    kind = "content"
    source = "owner-images"     # stands for the owner's training images

Every section and field is checked; an unknown one is an error naming it (a typo must not
silently fall back to a default).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

SECTIONS = {"data", "owner", "protocol", "schemes", "attacks"}
DATA_FIELDS = {"name": str, "path": str, "train_limit": int, "test_limit": int,
               "attacker_fraction": float}
DATA_NAMES = ("fashion-mnist", "cifar10")
OWNER_FIELDS = {"arch": str, "arch_kwargs": dict, "epochs": int, "embed_epochs": int,
                "lr": float, "batch_size": int, "references": int}
PROTOCOL_FIELDS = {"seeds": list, "alpha": float, "max_accuracy_loss": float}


@dataclass(frozen=True)
class ProtocolConfig:
    data: dict
    owner: dict
    protocol: dict
    schemes: dict  # label -> {"scheme": name, **generate options}
    attacks: list  # mlguard evaluate specs: CLI strings or {"attack": name, **params}
    source: str = field(default="", compare=False)


def load_config(path: str | Path) -> ProtocolConfig:
    """Reads and checks a protocol config; ValueError naming the file and field otherwise."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"--config: no such file: '{path}'") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"config '{path}' is not valid TOML: {e}") from None
    try:
        return parse_config(raw, source=str(path))
    except ValueError as e:
        raise ValueError(f"config '{path}': {e}") from None


def parse_config(raw: dict, source: str = "") -> ProtocolConfig:
    unknown = set(raw) - SECTIONS
    if unknown:
        raise ValueError(f"unknown section(s) {sorted(unknown)}; known: {sorted(SECTIONS)}")
    data = _section(raw, "data", DATA_FIELDS, required=("name",),
                    defaults={"attacker_fraction": 1 / 3})
    owner = _section(raw, "owner", OWNER_FIELDS, required=("arch",),
                     defaults={"arch_kwargs": {}, "epochs": 3, "embed_epochs": 2, "lr": 1e-3,
                               "batch_size": 128, "references": 4})
    protocol = _section(raw, "protocol", PROTOCOL_FIELDS, required=(),
                        defaults={"seeds": [0], "alpha": 1e-6, "max_accuracy_loss": 0.05})
    if data["name"] not in DATA_NAMES:
        raise ValueError(f"data.name must be one of {DATA_NAMES}, got {data['name']!r}")
    if "path" in data and data["name"] != "cifar10":
        raise ValueError(f"data.path is where the CIFAR-10 archive is; {data['name']} is "
                         "found by mlguard.data itself: remove data.path")
    if not 0 < data["attacker_fraction"] < 1:
        raise ValueError(f"data.attacker_fraction must be in (0, 1), got "
                         f"{data['attacker_fraction']}")
    for name in ("train_limit", "test_limit"):
        if name in data and data[name] < 1:
            raise ValueError(f"data.{name} must be >= 1, got {data[name]}")
    for name in ("epochs", "embed_epochs", "batch_size", "references"):
        if owner[name] < (0 if name == "epochs" else 1):
            raise ValueError(f"owner.{name} must be >= {0 if name == 'epochs' else 1}, got "
                             f"{owner[name]}")
    if not (math.isfinite(owner["lr"]) and owner["lr"] > 0):
        raise ValueError(f"owner.lr must be > 0, got {owner['lr']}")
    seeds = protocol["seeds"]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                            for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"protocol.seeds must be distinct ints >= 0, got {seeds!r}")
    if not 0 < protocol["alpha"] < 1:
        raise ValueError(f"protocol.alpha must be in (0, 1), got {protocol['alpha']}")
    if not 0 <= protocol["max_accuracy_loss"] <= 1:
        raise ValueError(f"protocol.max_accuracy_loss must be in [0, 1] (a fraction: 0.05 is "
                         f"5 points), got {protocol['max_accuracy_loss']}")
    schemes = raw.get("schemes")
    if not isinstance(schemes, dict) or not schemes:
        raise ValueError("[schemes] must name at least one scheme: [schemes.LABEL] with "
                         "scheme = \"NAME\" and its options")
    for label, entry in schemes.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("scheme"), str):
            raise ValueError(f"schemes.{label} must be a table with scheme = \"NAME\"")
        if not isinstance(entry.get("embedding", {}), dict):
            raise ValueError(f"schemes.{label}.embedding must be a table of the scheme's "
                             "embedding() options")
        from ..schemes import get_scheme
        get_scheme(entry["scheme"])  # ValueError naming the registered ones
    attacks = raw.get("attacks")
    if not isinstance(attacks, list) or not attacks:
        raise ValueError("attacks must be a non-empty list of attack specs, e.g. "
                         "[\"ftal:1\", \"prune:0.5\"]")
    for i, spec in enumerate(attacks):
        if not (isinstance(spec, str) or (isinstance(spec, dict)
                                          and isinstance(spec.get("attack"), str))):
            raise ValueError(f"attacks[{i}] must be a string like \"prune:0.5\" or a table "
                             f"with attack = \"NAME\" and its parameters, got {spec!r}")
    return ProtocolConfig(data, owner, protocol, dict(schemes), list(attacks), source)


def _section(raw: dict, name: str, fields: dict, required: tuple, defaults: dict) -> dict:
    given = raw.get(name, {})
    if not isinstance(given, dict):
        raise ValueError(f"[{name}] must be a table")
    unknown = set(given) - set(fields)
    if unknown:
        raise ValueError(f"[{name}] has unknown field(s) {sorted(unknown)}; known: "
                         f"{sorted(fields)}")
    missing = [f for f in required if f not in given]
    if missing:
        raise ValueError(f"[{name}] needs {missing}")
    out = dict(defaults)
    for key, value in given.items():
        kind = fields[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{name}.{key} must be a {kind.__name__}, got {value!r}")
        out[key] = value
    return out
