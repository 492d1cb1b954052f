"""TriggerMixer under torch.distributed: every rank draws different triggers in a step."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mlguard import TriggerKey, TriggerMixer

SECRET = bytes(range(11, 43))
PER_BATCH, STEPS, WORLD = 6, 5, 2


def key(size=100):
    return TriggerKey.generate(num_classes=10, size=size, shape=(3, 16, 16), secret=SECRET,
                               mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 10, (4,), generator=g)


def draws(mixer, steps=STEPS):
    """The triggers (images, labels) the mixer appends at each of `steps` steps."""
    x, y = batch()
    out = []
    for _ in range(steps):
        mx, my = mixer(x, y)
        out.append((mx[len(x):], my[len(x):]))
    return out


def _rank_main(rank, init_file, out_dir, augment):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    try:
        mixer = TriggerMixer(key(), per_batch=PER_BATCH, augment=augment)
        steps = draws(mixer)
        resumed = TriggerMixer(key(), per_batch=PER_BATCH, augment=augment)
        resumed.load_state_dict({"step": 2})
        again = draws(resumed, STEPS - 2)
        gathered = [None] * WORLD
        dist.all_gather_object(gathered, steps)
        if rank == 0:
            torch.save({"ranks": gathered, "resumed": again, "state": mixer.state_dict()},
                       os.path.join(out_dir, "draws.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("augment", [False, True])
def test_gloo_ranks_draw_disjoint_triggers_in_every_step(tmp_path, augment):
    mp.start_processes(_rank_main, args=(str(tmp_path / "init"), str(tmp_path), augment),
                       nprocs=WORLD, start_method="spawn")
    result = torch.load(tmp_path / "draws.pt", weights_only=True)
    ranks = result["ranks"]
    k = key()
    for step in range(STEPS):
        rows = torch.cat([ranks[r][step][0] for r in range(WORLD)]).flatten(1)
        # no image appears twice among all ranks' triggers of one step
        assert len(torch.unique(rows, dim=0)) == WORLD * PER_BATCH, f"duplicates in step {step}"
        for r in range(WORLD):
            # ranks take consecutive slices of the key's cycle: draw (step * W + r) * P + j
            first = (step * WORLD + r) * PER_BATCH
            expected = k.labels[torch.arange(first, first + PER_BATCH) % k.size]
            assert torch.equal(ranks[r][step][1], expected)
    # the same draws as an explicitly ranked mixer in this process, and exact on resume
    for r in range(WORLD):
        explicit = draws(TriggerMixer(k, per_batch=PER_BATCH, augment=augment, rank=r,
                                      world_size=WORLD))
        for (ei, el), (gi, gl) in zip(explicit, ranks[r]):
            assert torch.equal(ei, gi) and torch.equal(el, gl)
    for (ri, rl), (gi, gl) in zip(result["resumed"], ranks[0][2:]):
        assert torch.equal(ri, gi) and torch.equal(rl, gl)
    assert result["state"]["step"] == STEPS


def test_explicit_rank_and_world_size():
    k = key()
    single = draws(TriggerMixer(k, per_batch=4), steps=4)
    ranked = [draws(TriggerMixer(k, per_batch=4, rank=r, world_size=2), steps=2)
              for r in range(2)]
    # two ranks together cover exactly what one process draws in twice the steps
    for step in range(2):
        for r in range(2):
            assert torch.equal(ranked[r][step][0], single[2 * step + r][0])
            assert torch.equal(ranked[r][step][1], single[2 * step + r][1])
    # world_size 1 is the plain mixer
    plain = draws(TriggerMixer(k, per_batch=4, rank=0, world_size=1), steps=4)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(plain, single))


def test_bad_rank_arguments():
    k = key()
    with pytest.raises(ValueError, match=r"rank must be an int in \[0, world_size=2\), got 2"):
        TriggerMixer(k, per_batch=2, rank=2, world_size=2)
    with pytest.raises(ValueError, match=r"world_size must be an int >= 1, got 0"):
        TriggerMixer(k, per_batch=2, rank=0, world_size=0)
    with pytest.raises(ValueError, match="rank and world_size must be given together"):
        TriggerMixer(k, per_batch=2, rank=1)
