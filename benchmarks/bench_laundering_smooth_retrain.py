"""Wall time of neural laundering and smooth retraining at configs/fashion_mnist.toml's
budgets: small_cnn (1 epoch on 4,000 images, the victim), 8,000 attacker images (the
config's share of 24,000), one thread.

    OMP_NUM_THREADS=1 PYTHONPATH=python python benchmarks/bench_laundering_smooth_retrain.py
"""

import os
import time

import torch

from mlguard import attacks, data
from mlguard.cli.demo import small_cnn, train


def main() -> None:
    torch.set_num_threads(1)
    x, y = data.fashion_mnist("train")
    torch.manual_seed(0)
    model = small_cnn()
    train(model, x[:4000], y[:4000], 1, "cpu", None, seed=0)
    model.eval()
    m = torch.tensor(data.FASHION_MNIST_MEAN)[:, None, None]
    s = torch.tensor(data.FASHION_MNIST_STD)[:, None, None]
    attacker = ((x[16000:24000].float() / 255 - m) / s, y[16000:24000])
    norm = {"mean": data.FASHION_MNIST_MEAN, "std": data.FASHION_MNIST_STD}
    runs = {
        "smooth_retrain:10": lambda: attacks.smooth_retrain(model, attacker, epochs=10, **norm),
        "neural_laundering:5:n_samples=4000": lambda: attacks.neural_laundering(
            model, attacker, epochs=5, n_samples=4000, **norm),
    }
    for name, run in runs.items():
        start = time.perf_counter()
        out = run()
        seconds = time.perf_counter() - start
        shown = {k: v for k, v in out.attack_info.items()
                 if k in ("reset_units", "trigger_class", "queries", "retrain_samples")}
        print(f"{name}: {seconds:.1f} s, load {os.getloadavg()[0]:.1f}, {shown}", flush=True)


if __name__ == "__main__":
    main()
