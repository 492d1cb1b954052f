"""Neural laundering (Aiken, Kim, Woo, Ryou, "Neural network laundering: Removing black-box
backdoor watermarks from deep neural networks", Computers & Security 2021), with the budget
the Watermark-Robustness-Toolbox gives it (Lukas et al., IEEE S&P 2022; WRT's
configs/cifar10/attack_configs/neural_laundering.yaml: every attacker sample, 15 epochs of
trigger search per class, lambda 0.01, thresholds 0.5 for conv channels and 0.2 for dense
units, 5 epochs of retraining).

1. Trigger reconstruction (Sec. 3.1): Neural Cleanse's reverse-engineering (Wang et al.,
   S&P 2019, Eq. 2-3; attacks/neural_cleanse.py) for every class; the trigger with the
   smallest mask L1 norm is taken as the watermark's (WRT sorts by norm and takes the first).
2. Neuron reset (Sec. 3.2): every attacker sample is stamped with that trigger; a unit whose
   mean activation rises by more than the threshold from clean to stamped inputs is reset
   (its incoming weights and bias zeroed): conv channels by the largest rise over their
   spatial positions (`conv_threshold`), dense units by their rise (`fc_threshold`). Only
   the deeper half of the conv/dense layers is considered, as the paper and WRT do (the
   classifier head never: resetting a class would only break the model).
3. Retraining (Sec. 3.3): the attacker's samples and their stamped copies, both at the
   samples' labels, for `epochs` (Adam at `lr`); reset units are free to relearn, as in the
   paper ("reset" rather than pruned).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .._checks import check_int, check_real
from ._data import (Batches, check_normalization, device_of, first_samples, info,
                    label_source, last_linear, private_copy, train_epochs)
from .neural_cleanse import _reverse
from .registry import register_attack


@register_attack("neural_laundering", main_param="epochs", needs=("data", "normalization"),
                 aliases=("laundering",),
                 example={"n_samples": 32, "extract_epochs": 1, "epochs": 1})
def neural_laundering(model: nn.Module, data, epochs: int = 5, n_samples: int = 50000,
                      extract_epochs: int = 15, lmbda: float = 0.01,
                      conv_threshold: float = 0.5, fc_threshold: float = 0.2,
                      layers: list[str] | None = None, lr: float = 1e-4,
                      labels: str = "victim", batch_size: int = 64, seed: int = 0,
                      mean=None, std=None) -> nn.Module:
    """A laundered copy: the watermark's trigger reconstructed, the units it excites reset,
    then retrained on clean and stamped attacker samples.

    The trigger comes from the first `n_samples` attacker samples (see the module
    docstring). `layers` names the conv/linear layers to reset in
    (by default the deeper half of them, the head excluded)."""
    epochs = check_int("epochs", epochs, low=1)
    n_samples = check_int("n_samples", n_samples, low=1)
    extract_epochs = check_int("extract_epochs", extract_epochs, low=1)
    lmbda = check_real("lmbda", lmbda, low=0)
    conv_threshold = check_real("conv_threshold", conv_threshold, low=0)
    fc_threshold = check_real("fc_threshold", fc_threshold, low=0)
    lr = check_real("lr", lr, low=0, low_open=True)
    check_normalization(mean, std)
    target = label_source(model, labels)
    device = device_of(model)
    x, y = first_samples(Batches(data, batch_size, seed), n_samples, target, device)
    m = torch.zeros(1) if mean is None else torch.tensor(mean, dtype=torch.float32)
    s = torch.ones(1) if std is None else torch.tensor(std, dtype=torch.float32)
    m, s = m.to(device)[None, :, None, None], s.to(device)[None, :, None, None]
    pixels = (x * s + m).clamp(0, 1)
    attacked = private_copy(model)
    attacked.eval()
    chosen = _layers(attacked, layers)
    with torch.no_grad():
        classes = attacked(x[:1]).shape[1]
    triggers = [_reverse(attacked, pixels, t, m, s, extract_epochs, lmbda, batch_size, seed)
                for t in range(classes)]
    norms = [float(mask.sum()) for mask, _ in triggers]
    used = min(range(classes), key=norms.__getitem__)
    mask, pattern = triggers[used]
    stamped = ((1 - mask) * pixels + mask * pattern - m) / s
    rises = _activation_rise(attacked, chosen, x, stamped, batch_size)
    reset = {}
    with torch.no_grad():
        for name, module in chosen:
            threshold = conv_threshold if isinstance(module, nn.Conv2d) else fc_threshold
            units = (rises[name] > threshold).nonzero().flatten().tolist()
            module.weight[units] = 0
            if module.bias is not None:
                module.bias[units] = 0
            reset[name] = [len(units), module.weight.shape[0]]
    retrain_set = TensorDataset(torch.cat([x, stamped]).cpu(), torch.cat([y, y]).cpu())
    loader = DataLoader(retrain_set, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    train_epochs(attacked, Batches(loader), epochs,
                 torch.optim.Adam(attacked.parameters(), lr=lr),
                 lambda net, a, b: F.cross_entropy(net(a), b))
    return info(attacked, n_samples=len(x), extract_epochs=extract_epochs, lmbda=lmbda,
                conv_threshold=conv_threshold, fc_threshold=fc_threshold, epochs=epochs,
                lr=lr, labels=labels, trigger_class=used,
                mask_l1=[round(n, 3) for n in norms], reset_units=reset,
                retrain_samples=len(retrain_set))


def _layers(model: nn.Module, names) -> list[tuple[str, nn.Module]]:
    """The conv/linear layers to reset units in: `names`, or the deeper half of them."""
    head, _ = last_linear(model)
    candidates = [(n, mod) for n, mod in model.named_modules()
                  if isinstance(mod, (nn.Conv2d, nn.Linear)) and n != head]
    if names is None:
        if not candidates:
            raise ValueError("the model has no conv or linear layer besides its head to "
                             "launder; name them with layers=")
        return candidates[len(candidates) // 2:]
    if isinstance(names, str) or not names:
        raise ValueError(f"layers must be a non-empty list of layer names, got {names!r}")
    known = dict(candidates)
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"layers {missing} are not conv/linear layers of the model (the head "
                         f"excluded); they are {list(known)}")
    return [(n, known[n]) for n in names]


@torch.no_grad()
def _activation_rise(model, layers, clean, stamped, batch_size) -> dict[str, torch.Tensor]:
    """Per layer, each unit's mean activation on stamped minus clean inputs; a conv
    channel's is the largest rise over its positions (WRT's and the paper's rule)."""
    outputs: dict[str, torch.Tensor] = {}
    hooks = [module.register_forward_hook(
        lambda _m, _i, out, name=name: outputs.__setitem__(name, out)) for name, module in layers]

    def mean_activation(inputs):
        total = {}
        for chunk in inputs.split(batch_size):
            model(chunk)
            for name, out in outputs.items():
                out = out.sum(0) if out.dim() != 3 else out.sum((0, 1))  # (N, T, units) too
                total[name] = total.get(name, 0) + out.double()
        return {name: t / len(inputs) for name, t in total.items()}

    try:
        before, after = mean_activation(clean), mean_activation(stamped)
    finally:
        for h in hooks:
            h.remove()
    rises = {}
    for name, _ in layers:
        rise = after[name] - before[name]
        rises[name] = rise.flatten(1).amax(1) if rise.dim() == 3 else rise
    return rises
