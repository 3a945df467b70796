"""AdversarialBatches on a bundle's own MONAI engines: the same training and validation as monai_adv's engines."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from ignite.metrics import Accuracy
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import from_engine
from torch.utils.data import DataLoader

from monai_adv.engines import AdversarialEvaluator
from monai_adv.handlers import AdversarialBatches
from monai_adv.input_space import ZScoreInputSpace

from test_engines import make_trainer, postprocessing, random_items, separable_items, tiny_net

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SETTINGS = {"eps": 0.03, "attack": "pgd", "ratio": 0.5, "steps": 2}


def _trained_weights(use_handler: bool) -> list[torch.Tensor]:
    torch.manual_seed(1)
    net, items = tiny_net(), random_items(16)
    if use_handler:
        trainer = make_trainer(net, items, cls=SupervisedTrainer, max_epochs=2)
        AdversarialBatches(**SETTINGS).attach(trainer)
    else:
        trainer = make_trainer(net, items, max_epochs=2, **SETTINGS)
    counts = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: counts.append(e.state.adversarial["count"]))
    trainer.run()
    assert counts == [4, 4, 4, 4]
    return [p.detach().clone() for p in net.parameters()]


def test_a_plain_supervised_trainer_trains_as_the_mixed_adversarial_trainer() -> None:
    handler, engine = _trained_weights(True), _trained_weights(False)
    assert all(torch.equal(a, b) for a, b in zip(handler, engine))
    untouched = tiny_net().parameters()
    assert not all(torch.equal(a, b) for a, b in zip(handler, untouched))


def _robust_accuracy(evaluator_cls: type, **kwargs) -> float:
    torch.manual_seed(2)
    net = tiny_net()
    loader = DataLoader(separable_items(12), batch_size=4)
    evaluator = evaluator_cls(
        device=torch.device("cpu"), val_data_loader=loader, network=net, postprocessing=postprocessing(),
        key_val_metric={"acc": Accuracy(output_transform=from_engine(["pred", "label"]))}, **kwargs,
    )
    if evaluator_cls is SupervisedEvaluator:
        AdversarialBatches(eps=0.2, ratio=1.0, steps=3, default_steps=10, input_space=ZScoreInputSpace()).attach(
            evaluator
        )
    evaluator.run()
    assert int(evaluator.state.adversarial["mask"].sum()) == 4
    return evaluator.state.metrics["acc"]


def test_a_plain_supervised_evaluator_validates_as_the_adversarial_evaluator() -> None:
    # z-scored inputs: the per-image z-score of the [0, 1] images the data set holds
    expected = _robust_accuracy(AdversarialEvaluator, eps=0.2, steps=3, input_space=ZScoreInputSpace())
    assert _robust_accuracy(SupervisedEvaluator) == expected


def test_disabled_attaches_nothing_and_a_second_handler_is_refused() -> None:
    trainer = make_trainer(tiny_net(), random_items(8), cls=SupervisedTrainer)
    prepare = trainer.prepare_batch
    AdversarialBatches(eps=0.01, enabled=False).attach(trainer)
    assert trainer.prepare_batch is prepare
    AdversarialBatches(eps=0.01).attach(trainer)
    with pytest.raises(ValueError, match="already crafts adversarial batches"):
        AdversarialBatches(eps=0.01).attach(trainer)
    with pytest.raises(ValueError, match="adversarial batches need labels"):
        trainer.prepare_batch({"image": torch.rand(2, 1, 32, 32)})
