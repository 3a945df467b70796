"""Tests of monai_adv.engines: mixed adversarial training and adversarial validation."""

from __future__ import annotations

import copy

import pytest
import torch
from ignite.engine import Events
from ignite.metrics import Accuracy
from monai.data import MetaTensor
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.handlers import StatsHandler, ValidationHandler, from_engine
from monai.transforms import Activationsd, AsDiscreted, Compose
from torch import nn
from torch.utils.data import DataLoader

from monai_adv.attacks.config import AttackConfig
from monai_adv.engines import AdversarialEvaluator, MixedAdversarialTrainer
from monai_adv.handlers.adversarial_batches import ADVERSARIAL_KEY, adversarial_count, replace_with_adversarial
from monai_adv.attacks import PGD
from monai_adv.networks import PaperVGG16

DEVICE = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_net(seed: int = 0, dropout: float = 0.0) -> PaperVGG16:
    torch.manual_seed(seed)
    return PaperVGG16(in_channels=1, input_size=32, width=0.0625, batch_norm=True, dropout=dropout)


def random_items(n: int, seed: int = 0, meta: bool = False) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 32, 32, generator=g)
    labels = torch.randint(0, 2, (n,), generator=g)
    return [
        {"image": MetaTensor(images[i]) if meta else images[i], "label": labels[i]} for i in range(n)
    ]


def separable_items(n: int, seed: int = 0) -> list[dict]:
    """Class 0: dark images (mean 0.3), class 1: bright images (mean 0.7), plus noise; clipped to [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = (0.3 + 0.4 * labels.view(n, 1, 1, 1) + 0.1 * torch.randn(n, 1, 32, 32, generator=g)).clamp(0, 1)
    return [{"image": images[i], "label": labels[i]} for i in range(n)]


def postprocessing() -> Compose:
    return Compose([
        Activationsd(keys="pred", softmax=True),
        AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=[2, 2]),
    ])


def make_trainer(net, items, cls=MixedAdversarialTrainer, batch_size=8, max_epochs=1, **kwargs):
    loader = DataLoader(items, batch_size=batch_size, shuffle=False)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    return cls(
        device=DEVICE, max_epochs=max_epochs, train_data_loader=loader, network=net, optimizer=optimizer,
        loss_function=nn.CrossEntropyLoss(), **kwargs,
    )


def test_adversarial_count_rounding():
    assert [adversarial_count(8, r) for r in (0.5, 1.0, 0.25, 0.0)] == [4, 8, 2, 0]
    assert adversarial_count(3, 0.5) == 2  # halves rounded up, not to even
    assert adversarial_count(5, 0.5) == 3
    assert adversarial_count(1, 0.4) == 0


@pytest.mark.parametrize("ratio", [0.5, 1.0, 0.25, 0.0])
@pytest.mark.parametrize("selection", ["random", "first"])
def test_share_of_adversarial_samples(ratio, selection):
    trainer = make_trainer(tiny_net(), random_items(20), eps=0.03, ratio=ratio, steps=1, selection=selection)
    seen = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def record(engine):
        # output is decollated (a list of dicts) by now
        mask = torch.stack([torch.as_tensor(o[ADVERSARIAL_KEY]) for o in engine.state.output])
        seen.append((len(engine.state.output), engine.state.adversarial["count"], int(mask.sum())))
        assert torch.equal(mask, engine.state.adversarial["mask"])
        if selection == "first":
            assert bool(mask[: int(mask.sum())].all())

    trainer.run()
    expected = [(b, adversarial_count(b, ratio), adversarial_count(b, ratio)) for b in (8, 8, 4)]
    assert seen == expected


@pytest.mark.parametrize("attack,meta", [("pgd", False), ("fgsm_rs", True), ("fgsm", False), ("bim", False)])
def test_adversarial_samples_within_eps_and_clean_untouched(attack, meta):
    eps = 0.05
    trainer = make_trainer(
        tiny_net(), random_items(16, meta=meta), eps=eps, ratio=0.5, attack=attack, decollate=False,
    )
    checked = []

    @trainer.on(IterationEvents.FORWARD_COMPLETED)
    def check(engine):
        clean = torch.as_tensor(engine.state.batch["image"])
        mixed = engine.state.output["image"]
        mask = engine.state.output[ADVERSARIAL_KEY]
        assert isinstance(mixed, MetaTensor) == meta
        mixed = torch.as_tensor(mixed)
        assert mask.dtype == torch.bool and mask.shape == (clean.shape[0],) and int(mask.sum()) == 4
        assert torch.equal(mixed[~mask], clean[~mask])
        diff = (mixed[mask] - clean[mask]).abs()
        assert float(diff.max()) <= eps + 1e-6
        assert float(diff.max()) > 0.5 * eps  # something was crafted
        assert float(mixed.min()) >= 0.0 and float(mixed.max()) <= 1.0
        checked.append(engine.state.adversarial["attack"])

    trainer.run()
    assert checked == [attack, attack]


def test_crafting_leaves_batchnorm_and_grads_alone():
    """Crafting runs in eval mode with input-only gradients: replaying the training steps alone on a copy of the
    network, with the mixed inputs the trainer produced, gives the same BN statistics and parameter gradients.
    With accumulation_steps=2 the second crafting happens while the first iteration's gradients are still held."""
    net = tiny_net()
    replica = copy.deepcopy(net)
    items = random_items(16)
    trainer = make_trainer(net, items, eps=0.05, ratio=0.5, accumulation_steps=2, decollate=False)
    captured = []

    @trainer.on(IterationEvents.BACKWARD_COMPLETED)
    def capture(engine):
        captured.append({
            "image": torch.as_tensor(engine.state.output["image"]).clone(),
            "label": engine.state.output["label"].clone(),
            "grads": [p.grad.clone() for p in engine.network.parameters()],
            "buffers": [b.clone() for b in engine.network.buffers()],
        })

    trainer.run()
    assert len(captured) == 2
    replica.train()
    for step in captured:
        loss = nn.CrossEntropyLoss()(replica(step["image"]), step["label"])
        (loss / 2).backward()
        for b_ref, b in zip(replica.buffers(), step["buffers"]):
            assert torch.equal(b_ref, b)  # incl. num_batches_tracked: 1 per training forward, none from the attack
        for p, g in zip(replica.parameters(), step["grads"]):
            torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)


def test_attack_step_alone_keeps_state():
    net = tiny_net()
    net.train()
    x = torch.rand(4, 1, 32, 32)
    y = torch.tensor([0, 1, 0, 1])
    nn.CrossEntropyLoss()(net(x), y).backward()
    grads = [p.grad.clone() for p in net.parameters()]
    buffers = [b.clone() for b in net.buffers()]
    out = replace_with_adversarial(x, y, torch.tensor([1, 3]), PGD(net, 0.05, steps=3))
    assert net.training and all(m.training for m in net.modules())
    assert all(torch.equal(a, b) for a, b in zip(buffers, net.buffers()))
    assert all(torch.equal(a, p.grad) for a, p in zip(grads, net.parameters()))
    assert torch.equal(out[[0, 2]], x[[0, 2]]) and not torch.equal(out[[1, 3]], x[[1, 3]])


def _event_recorder(engine) -> list:
    events = []
    for event in list(Events) + list(IterationEvents):
        engine.add_event_handler(event, lambda e, ev=event: events.append(ev.name))
    return events


def _bundle_like(cls, evaluator_cls, **kwargs):
    net = tiny_net()
    val_kwargs = {"eps": 0.03, "steps": 1} if evaluator_cls is AdversarialEvaluator else {}
    evaluator = evaluator_cls(
        device=DEVICE, val_data_loader=DataLoader(random_items(6, seed=1), batch_size=4), network=net,
        postprocessing=postprocessing(),
        key_val_metric={"val_acc": Accuracy(output_transform=from_engine(["pred", "label"]))},
        val_handlers=[StatsHandler(iteration_log=False)], **val_kwargs,
    )
    trainer = make_trainer(
        net, random_items(12), cls=cls, max_epochs=2, postprocessing=postprocessing(),
        key_train_metric={"train_acc": Accuracy(output_transform=from_engine(["pred", "label"]))},
        train_handlers=[ValidationHandler(validator=evaluator, interval=1), StatsHandler(tag_name="loss",
                        output_transform=from_engine(["loss"], first=True))],
        **kwargs,
    )
    return trainer, evaluator


def test_same_event_sequence_as_supervised_trainer():
    runs = {}
    for name, cls, ecls, kw in [
        ("plain", SupervisedTrainer, SupervisedEvaluator, {}),
        ("adversarial", MixedAdversarialTrainer, AdversarialEvaluator, {"eps": 0.03, "steps": 1}),
    ]:
        trainer, evaluator = _bundle_like(cls, ecls, **kw)
        train_events, val_events = _event_recorder(trainer), _event_recorder(evaluator)
        trainer.run()
        runs[name] = (train_events, val_events, set(trainer.state.metrics), set(evaluator.state.metrics))
    assert runs["plain"] == runs["adversarial"]
    train_events, val_events = runs["adversarial"][:2]
    for ev in ("FORWARD_COMPLETED", "LOSS_COMPLETED", "BACKWARD_COMPLETED", "MODEL_COMPLETED", "ITERATION_STARTED",
               "ITERATION_COMPLETED", "EPOCH_STARTED", "EPOCH_COMPLETED", "STARTED", "COMPLETED"):
        assert ev in train_events
    assert train_events.count("BACKWARD_COMPLETED") == 4  # 2 epochs x 2 iterations
    assert val_events.count("MODEL_COMPLETED") == 4  # 2 validations x 2 iterations


def test_eps_warmup_schedule():
    items = random_items(4)

    def eps_per_epoch(**kwargs):
        trainer = make_trainer(tiny_net(), items, batch_size=4, max_epochs=5, steps=1, **kwargs)
        seen = []
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(e.state.adversarial["eps"]))
        trainer.run()
        return trainer, seen

    trainer, seen = eps_per_epoch(eps=0.04, eps_warmup_epochs=4)
    assert seen == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.04])
    assert trainer.eps_at(0) == 0.0

    trainer, seen = eps_per_epoch(eps=0.04, eps_warmup_epochs=2, eps_warmup_start=0.02)
    assert seen == pytest.approx([0.03, 0.04, 0.04, 0.04, 0.04])

    trainer, seen = eps_per_epoch(eps_schedule=[[1, 0.0], [2, 0.001], [4, 0.002]])
    assert seen == pytest.approx([0.0, 0.001, 0.001, 0.002, 0.002])
    assert trainer.eps == 0.002
    # eps 0 crafts nothing
    trainer = make_trainer(tiny_net(), items, batch_size=4, steps=1, eps_schedule=[[1, 0.0]])
    trainer.run()
    assert trainer.state.adversarial["count"] == 0

    with pytest.raises(ValueError):
        make_trainer(tiny_net(), items, eps_schedule=[[2, 0.001]])
    with pytest.raises(ValueError):
        make_trainer(tiny_net(), items, eps=0.01, eps_schedule=[[1, 0.001]], eps_warmup_epochs=2)
    with pytest.raises(ValueError):
        make_trainer(tiny_net(), items)  # no eps
    with pytest.raises(ValueError):
        make_trainer(tiny_net(), items, eps=0.01, ratio=1.5)
    with pytest.raises(ValueError):
        make_trainer(tiny_net(), items, eps=0.01, attack="fgsm_rs", steps=3)


def test_adversarial_evaluator_on_trained_model():
    torch.manual_seed(0)
    net = PaperVGG16(in_channels=1, input_size=32, width=0.0625, batch_norm=True, dropout=0.0)
    train_items, val_items = separable_items(64, seed=0), separable_items(16, seed=1)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    trainer = SupervisedTrainer(
        device=DEVICE, max_epochs=6, train_data_loader=DataLoader(train_items, batch_size=16, shuffle=True),
        network=net, optimizer=optimizer, loss_function=nn.CrossEntropyLoss(),
    )
    trainer.run()

    def evaluate(cls, **kwargs):
        evaluator = cls(
            device=DEVICE, val_data_loader=DataLoader(val_items, batch_size=8), network=net,
            postprocessing=postprocessing(),
            key_val_metric={"acc": Accuracy(output_transform=from_engine(["pred", "label"]))}, **kwargs,
        )
        inputs = []

        @evaluator.on(IterationEvents.FORWARD_COMPLETED)
        def keep_inputs(e):
            inputs.append((torch.as_tensor(e.state.batch["image"]), torch.as_tensor(e.state.output["image"])))

        evaluator.run()
        return evaluator.state.metrics["acc"], inputs

    clean_acc, _ = evaluate(SupervisedEvaluator)
    eps = 0.25
    torch.manual_seed(1)
    robust_acc, inputs = evaluate(AdversarialEvaluator, eps=eps, steps=5)
    # the same as running the attack by hand (same random starts)
    torch.manual_seed(1)
    correct = 0
    for batch in DataLoader(val_items, batch_size=8):
        adv = PGD(net, eps, steps=5)(batch["image"], batch["label"])
        with torch.no_grad():
            correct += int((net.eval()(adv).argmax(1) == batch["label"]).sum())
    assert robust_acc == correct / len(val_items)
    assert clean_acc >= 0.75, clean_acc  # the toy task was learnt
    assert robust_acc <= clean_acc and robust_acc < clean_acc
    for clean, adv in inputs:
        diff = (adv - clean).abs()
        assert float(diff.max()) <= eps + 1e-6 and float(diff.max()) > 0
        assert float(adv.min()) >= 0 and float(adv.max()) <= 1


def test_extra_network_inputs_follow_the_attacked_samples():
    """With PrepareBatchExtraInput and a custom inferer the attack differentiates the engine's own forward pass, with
    per-sample extra inputs restricted to the attacked samples."""
    from monai.engines import PrepareBatchExtraInput
    from monai.inferers import SimpleInferer

    class ScaledNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))

        def forward(self, x, scale):
            assert scale.shape == (x.shape[0],)
            return self.fc(x) * scale[:, None]

    class CountingInferer(SimpleInferer):
        calls = 0

        def __call__(self, inputs, network, *args, **kwargs):
            CountingInferer.calls += 1
            return super().__call__(inputs, network, *args, **kwargs)

    items = [{"image": torch.rand(1, 4, 4), "label": torch.tensor(i % 2), "scale": torch.tensor(1.0 + i)}
             for i in range(8)]
    trainer = make_trainer(
        ScaledNet(), items, batch_size=4, prepare_batch=PrepareBatchExtraInput("scale"), inferer=CountingInferer(),
        eps=0.1, ratio=0.5, steps=2,
    )
    trainer.run()
    assert trainer.state.adversarial["count"] == 2
    assert CountingInferer.calls == 2 * (1 + 2)  # per iteration: 2 attack steps + the training forward


def test_factory_attack_and_bundle_config():
    """A callable factory works, and both engines build from a bundle-style config with plain values."""
    from monai.bundle import ConfigParser

    calls = []

    def factory(model, eps):
        calls.append(eps)
        return AttackConfig("fgsm").build(model, eps)

    trainer = make_trainer(tiny_net(), random_items(8), eps=0.02, attack=factory, ratio=0.5)
    trainer.run()
    assert calls == [0.02] and trainer.state.adversarial["attack"] == "factory"

    parser = ConfigParser({
        "imports": ["$import torch", "$import monai_adv"],
        "network": "$monai_adv.networks.PaperVGG16(in_channels=1, input_size=32, width=0.0625, batch_norm=True)",
        "data": "$[{'image': torch.rand(1, 32, 32), 'label': i % 2} for i in range(8)]",
        "loader": {"_target_": "DataLoader", "dataset": "@data", "batch_size": 4},
        "evaluator": {
            "_target_": "monai_adv.engines.AdversarialEvaluator", "device": "$torch.device('cpu')",
            "val_data_loader": "@loader", "network": "@network", "eps": 0.002, "steps": 2,
        },
        "trainer": {
            "_target_": "monai_adv.engines.MixedAdversarialTrainer", "device": "$torch.device('cpu')",
            "max_epochs": 2, "train_data_loader": "@loader", "network": "@network",
            "optimizer": {"_target_": "torch.optim.SGD", "params": "$@network.parameters()", "lr": 0.01},
            "loss_function": {"_target_": "torch.nn.CrossEntropyLoss"},
            "attack": "pgd", "ratio": 0.5, "steps": 2, "eps_schedule": [[1, 0.001], [2, 0.002]],
            "train_handlers": [{"_target_": "ValidationHandler", "validator": "@evaluator", "interval": 1}],
        },
    })
    trainer = parser.get_parsed_content("trainer")
    evaluator = parser.get_parsed_content("evaluator")
    assert isinstance(trainer, MixedAdversarialTrainer) and isinstance(evaluator, AdversarialEvaluator)
    trainer.run()
    assert trainer.state.adversarial["eps"] == 0.002 and trainer.state.adversarial["count"] == 2
    assert evaluator.state.adversarial["count"] == 4


# ---------------------------------------------------------------------------------------------------------------------
# input spaces: network inputs that are not [0, 1]


def _zscore(u: torch.Tensor) -> torch.Tensor:
    flat = u.flatten(1)
    return (u - flat.mean(1).view(-1, 1, 1, 1)) / flat.std(1, unbiased=False).view(-1, 1, 1, 1)


def _minmax(x: torch.Tensor) -> torch.Tensor:
    lo, hi = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
    return (x - lo) / (hi - lo)


class _OfU(nn.Module):
    """``net(to_network(u))`` written out by hand."""

    def __init__(self, net, to_network):
        super().__init__()
        self.net, self.to_network = net, to_network

    def forward(self, u):
        return self.net(self.to_network(u))


def _small_net(offset: float = 0.0, scale: float = 1.0) -> nn.Module:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = body

        def forward(self, x):
            return self.body((x - offset) / scale)

    return Net()


def test_adversarial_evaluator_through_a_zscore_input_space():
    from monai_adv.input_space import ZScoreInputSpace

    u = _minmax(torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(0)))
    x = _zscore(u)
    net = _small_net()
    with torch.no_grad():
        labels = net(x).argmax(1)
    items = [{"image": x[i], "label": labels[i]} for i in range(8)]
    evaluator = AdversarialEvaluator(
        device=DEVICE, val_data_loader=DataLoader(items, batch_size=4), network=net, postprocessing=postprocessing(),
        key_val_metric={"acc": Accuracy(output_transform=from_engine(["pred", "label"]))}, eps=0.1, steps=3,
        input_space=ZScoreInputSpace(),
    )
    inputs = []
    evaluator.add_event_handler(IterationEvents.FORWARD_COMPLETED,
                                lambda e: inputs.append(torch.as_tensor(e.state.output["image"]).clone()))
    torch.manual_seed(1)
    evaluator.run()
    # by hand: PGD on u against net(zscore(u)), the batch gets zscore(u_adv)
    torch.manual_seed(1)
    correct, expected = 0, []
    for batch in DataLoader(items, batch_size=4):
        adv_u = PGD(_OfU(net, _zscore), 0.1, steps=3)(_minmax(batch["image"]), batch["label"])
        expected.append(_zscore(adv_u))
        with torch.no_grad():
            correct += int((net(expected[-1]).argmax(1) == batch["label"]).sum())
    for got, want in zip(inputs, expected):
        torch.testing.assert_close(got, want)
    assert evaluator.state.metrics["acc"] == correct / 8 < 1.0


def test_trainer_attacks_u_through_a_fixed_hu_window():
    from monai_adv.input_space import InputSpace

    eps, space = 0.05, InputSpace(-1000, 400)
    net = _small_net(offset=-300.0, scale=700.0)
    hu = -1000 + 1400 * torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    items = [{"image": hu[i], "label": torch.tensor(i % 2)} for i in range(8)]
    called = []

    def factory(model, eps):
        pgd = PGD(model, eps, steps=2)

        def attack(images, labels):
            called.append((model, images.clone()))
            return pgd(images, labels)

        return attack

    trainer = make_trainer(net, items, batch_size=4, eps=eps, ratio=0.5, attack=factory, selection="first",
                           decollate=False, input_space=space)
    seen = []
    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda e: seen.append(
        (torch.as_tensor(e.state.batch["image"]).clone(), torch.as_tensor(e.state.output["image"]).clone())))
    trainer.run()
    assert len(called) == 2
    for (model, images), (clean, mixed) in zip(called, seen):
        torch.testing.assert_close(images, (clean[:2] + 1000) / 1400)  # the attack is given u
        with torch.no_grad():
            torch.testing.assert_close(model(images), net(clean[:2]), rtol=1e-5, atol=1e-5)  # and net of u
        diff = (mixed - clean).abs()
        assert torch.equal(mixed[2:], clean[2:])
        assert 0.5 * eps * 1400 < float(diff[:2].max()) <= eps * 1400 * (1 + 1e-5)  # eps is a fraction of the window
        assert float(mixed.min()) >= -1000 - 1e-3 and float(mixed.max()) <= 400 + 1e-3


def test_raw_hu_without_an_input_space_is_refused():
    from monai_adv.input_space import InputSpaceError

    items = [{"image": -1000 + 1400 * torch.rand(1, 4, 4), "label": torch.tensor(i % 2)} for i in range(4)]
    trainer = make_trainer(_small_net(offset=-300.0, scale=700.0), items, batch_size=4, eps=0.01, ratio=1.0, steps=1)
    with pytest.raises(InputSpaceError, match="adv_input_space"):
        trainer.run()


@pytest.mark.parametrize("cls", [MixedAdversarialTrainer, AdversarialEvaluator])
def test_engines_refuse_probability_outputs_on_the_first_iteration(cls):
    from monai_adv.network_output import ProbabilityOutputError

    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2), nn.Softmax(dim=1))
    loader = DataLoader([{"image": torch.rand(1, 4, 4), "label": torch.tensor(i % 2)} for i in range(8)], batch_size=2)
    if cls is MixedAdversarialTrainer:
        engine = make_trainer(net, loader.dataset, batch_size=2, eps=0.01, steps=1)
    else:
        engine = AdversarialEvaluator(device=DEVICE, val_data_loader=loader, network=net, eps=0.01, steps=1)
    with pytest.raises(ProbabilityOutputError, match=f"{cls.__name__}'s network ends in Softmax"):
        engine.run()
    assert engine.state.iteration == 1


def test_replace_with_adversarial_maps_to_u_and_back():
    from monai_adv.input_space import InputSpace

    space = InputSpace(-1.0, 1.0)
    x = torch.rand(4, 1, 4, 4) * 2 - 1
    seen = []

    def attack(u, labels):
        seen.append(u.clone())
        return (u + 0.25).clamp(0, 1)

    out = replace_with_adversarial(x, None, torch.tensor([1, 3]), attack, space)
    torch.testing.assert_close(seen[0], (x[[1, 3]] + 1) / 2)
    torch.testing.assert_close(out[[1, 3]], ((x[[1, 3]] + 1) / 2 + 0.25).clamp(0, 1) * 2 - 1)
    assert torch.equal(out[[0, 2]], x[[0, 2]])
