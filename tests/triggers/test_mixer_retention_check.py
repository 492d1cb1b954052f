"""TriggerMixer's retention check (issue 18, item 4): a key that does not take must not go
unnoticed; the check reads the key exactly as verify() does."""

import warnings

import pytest
import torch

from mlguard import TriggerKey, TriggerMixer, mix, verify
from memorizer import Memorizer

SECRET = bytes(range(7, 39))


def key(size=20, **kw):
    args = dict(num_classes=10, size=size, shape=(1, 8, 8), secret=SECRET, mean=(0.5,),
                std=(0.25,))
    args.update(kw)
    return TriggerKey.generate(**args)


def batch(n=4):
    return torch.randn(n, 1, 8, 8), torch.randint(0, 10, (n,))


def run(mixer, steps):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(steps):
            mixer(*batch())
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_a_model_that_did_not_learn_the_triggers_warns_at_every_check():
    k = key()
    mixer = TriggerMixer(k, per_batch=5, model=Memorizer(k, correct=0), check_every=2)
    messages = run(mixer, 5)
    assert len(messages) == 2  # steps 2 and 4
    assert "step 2 (0.5 views per trigger): 0/20 matched (retention 0%), NOT detected" \
        in messages[0]
    needed = mixer.checks[0].needed
    assert f"needs {needed}/20" in messages[0] and "raise per_batch (now 5" in messages[0]
    assert "would not be detected" in messages[1] and "'abstract'" in messages[1]
    assert [c.step for c in mixer.checks] == [2, 4] and mixer.per_batch == 5


def test_a_model_that_learned_the_triggers_does_not_warn():
    k = key()
    mixer = TriggerMixer(k, per_batch=5, model=Memorizer(k, correct=20), check_every=1)
    assert run(mixer, 3) == []
    assert [(c.matches, c.detected) for c in mixer.checks] == [(20, True)] * 3


def test_a_real_training_loop_warns_until_the_key_takes():
    torch.manual_seed(0)
    k = key()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    mixer = TriggerMixer(k, per_batch=20, augment=False, model=model, check_every=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(40):
            x, y = mixer(*batch())
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    assert not mixer.checks[0].detected and mixer.checks[-1].detected
    assert len(caught) == sum(not c.detected for c in mixer.checks) >= 1
    assert verify(model, k).matches == mixer.check().matches


def test_the_check_agrees_with_verify_at_the_threshold():
    k = key(size=50)
    mixer = TriggerMixer(k, per_batch=5, model=Memorizer(k, 0), check_every=1)
    needed = mixer._needed
    assert 5 < needed < 50
    for correct in (needed - 1, needed, 50):
        model = Memorizer(k, correct)
        mixer.model = model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = mixer.check()
        v = verify(model, k)
        assert (result.matches, result.total, result.detected) == \
            (v.matches, v.total, v.detected)
    assert not mixer.checks[0].detected and mixer.checks[1].detected


def test_the_check_uses_the_given_alpha():
    k = key(size=50)
    strict = TriggerMixer(k, model=Memorizer(k, 0), check_every=1, alpha=1e-12)
    loose = TriggerMixer(k, model=Memorizer(k, 0), check_every=1, alpha=1e-3)
    assert strict._needed > loose._needed
    model = Memorizer(k, loose._needed)
    for mixer, detected in ((strict, False), (loose, True)):
        mixer.model = model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert mixer.check().detected is detected
        assert verify(model, k, alpha=mixer.alpha).detected is detected


def test_adaptive_mode_doubles_per_batch_up_to_its_bound():
    k = key(size=20)
    mixer = TriggerMixer(k, per_batch=4, model=Memorizer(k, 0), check_every=1, target=0.8)
    messages = run(mixer, 4)
    assert [c.per_batch for c in mixer.checks] == [8, 16, 16, 16]  # default bound 4 x 4
    assert [c.raised_from for c in mixer.checks] == [4, 8, None, None]
    assert "per_batch is raised from 4 to 8" in messages[0]
    assert "per_batch is at max_per_batch=16" in messages[2]
    mixer.model = Memorizer(k, 20)  # learned: on target, no warning, per_batch stays
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x, y = mixer(*batch())
    assert x.shape[0] == 4 + 16 and mixer.state_dict()["per_batch"] == 16


def test_adaptive_mode_never_exceeds_the_key_size():
    k = key(size=20)
    mixer = TriggerMixer(k, per_batch=8, model=Memorizer(k, 0), check_every=1, target=1.0)
    run(mixer, 3)
    assert [c.per_batch for c in mixer.checks] == [16, 20, 20]


def test_adaptive_mode_raises_below_target_even_when_detected_and_stops_at_target():
    k = key(size=50)
    mixer = TriggerMixer(k, per_batch=4, model=Memorizer(k, 30), check_every=1, target=0.8)
    messages = run(mixer, 1)
    assert mixer.checks[0].detected and mixer.per_batch == 8
    assert len(messages) == 1 and "below target=0.8" in messages[0]
    mixer.model = Memorizer(k, 40)  # retention 0.8: on target
    assert run(mixer, 2) == [] and mixer.per_batch == 8


def test_the_check_restores_every_submodules_mode():
    k = key()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10),
                                torch.nn.BatchNorm1d(10))
    model.train()
    model[2].eval()  # a frozen BatchNorm
    mixer = TriggerMixer(k, model=model, check_every=1)
    run(mixer, 1)
    assert model.training and model[1].training and not model[2].training
    assert len(mixer.checks) == 1


def test_pattern_keys_are_checked_by_their_votes_as_verify_counts_them():
    carriers = torch.rand(30, 1, 8, 8)
    k = TriggerKey.generate(num_classes=10, size=30, shape=(1, 8, 8), kind="content",
                            source=carriers, mean=(0.5,), std=(0.25,), secret=SECRET)
    assert k.mode == "pattern"

    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(10))
            self.bias.data[int(k.targets[0])] = 1.0

        def forward(self, x):
            return self.bias.expand(x.shape[0], 10)

    model = Constant()
    mixer = TriggerMixer(k, per_batch=4, model=model, check_every=1)
    messages = run(mixer, 1)
    v = verify(model, k)
    assert (mixer.checks[0].matches, mixer.checks[0].total) == (v.matches, v.total)
    assert mixer.checks[0].total == k.patterns and not v.detected
    assert len(messages) == 1 and "16 patterns" in messages[0]


def test_mix_checks_once_per_epoch_by_default():
    k = key()
    loader = [batch() for _ in range(3)]
    mixed = mix(loader, k, per_batch=2, model=Memorizer(k, 0))
    assert mixed.mixer.check_every == 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            for _ in mixed:
                pass
    assert [c.step for c in mixed.mixer.checks] == [3, 6] and len(caught) == 2
    assert mixed.mixer.checks[-1].views == pytest.approx(6 * 2 / 20)


def test_without_a_model_nothing_is_checked():
    k = key()
    mixer = TriggerMixer(k, per_batch=2)
    assert run(mixer, 3) == [] and mixer.checks == []
    with pytest.raises(ValueError, match="no model to check"):
        mixer.check()


def test_state_dict_keeps_the_raised_per_batch_and_old_states_load():
    k = key()
    a = TriggerMixer(k, per_batch=4, model=Memorizer(k, 0), check_every=1, target=0.9)
    run(a, 2)
    b = TriggerMixer(k, per_batch=4)
    b.load_state_dict(a.state_dict())
    assert (b.step, b.per_batch, b.drawn) == (2, 16, 4 + 8)
    x, y = batch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.equal(b(x, y)[0], a(x, y)[0])  # resumed: the same draws
    b.load_state_dict({"step": 3})  # saved before the adaptive mode: per_batch kept
    assert (b.step, b.per_batch, b.drawn) == (3, 16, 48)
    with pytest.raises(ValueError, match=r"state\['per_batch'\]=21"):
        b.load_state_dict({"step": 1, "per_batch": 21})


@pytest.mark.parametrize("kwargs, match", [
    (dict(check_every=5), "need model="),
    (dict(target=0.8), "need model="),
    (dict(model="net", check_every=1), "model must be a torch.nn.Module"),
    (dict(model=True), "needs check_every="),
    (dict(model=True, check_every=0), "check_every must be an int >= 1, got 0"),
    (dict(model=True, check_every=1, alpha=0), r"alpha must be a number in \(0, 1\), got 0"),
    (dict(model=True, check_every=1, alpha=1.5), "alpha must be"),
    (dict(model=True, check_every=1, target=0), r"target must be a retention in \(0, 1\]"),
    (dict(model=True, check_every=1, target=1.2), "target must be"),
    (dict(model=True, check_every=1, max_per_batch=21), "max_per_batch=21 is larger than"),
    (dict(model=True, check_every=1, max_per_batch=2), "max_per_batch must be an int >= 4"),
    (dict(model=True, check_every=1, per_batch=0, target=0.5), "needs per_batch >= 1"),
])
def test_bad_check_arguments_are_refused_by_name(kwargs, match):
    k = key()
    if kwargs.get("model") is True:
        kwargs["model"] = Memorizer(k, 0)
    kwargs.setdefault("per_batch", 4)
    with pytest.raises((ValueError, TypeError), match=match):
        TriggerMixer(k, **kwargs)


def test_mix_with_a_model_and_a_loader_without_len_needs_check_every():
    k = key()
    with pytest.raises(ValueError, match="no len\\(\\) needs check_every="):
        mix((b for b in [batch()]), k, model=Memorizer(k, 0))
    with pytest.raises(ValueError, match="the loader is empty"):
        mix([], k, model=Memorizer(k, 0))
    assert mix((b for b in [batch()]), k, model=Memorizer(k, 0), check_every=7).mixer \
        .check_every == 7
