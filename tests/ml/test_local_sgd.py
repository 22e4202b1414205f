"""FedAvg's local SGD (ml.fl.workers.LocalSGD) against torch.optim.SGD: the same weights."""
import copy

import pytest
import torch
from torch.nn import functional as F

from ml.fl.workers import LocalSGD, SGDSettings
from ml.models import build_model


@pytest.mark.parametrize("settings", [SGDSettings(0.05), SGDSettings(0.05, momentum=0.9),
                                      SGDSettings(0.1, momentum=0.5, weight_decay=1e-3)])
def test_local_sgd_gives_torch_sgds_weights_bit_for_bit(settings):
    torch.manual_seed(0)
    ours = build_model("cnn-small", 10, (1, 28, 28))
    theirs, start = copy.deepcopy(ours), copy.deepcopy(ours)
    reference = torch.optim.SGD(theirs.parameters(), lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay)
    optimizer = LocalSGD(list(ours.parameters()), settings)
    data = torch.Generator().manual_seed(1)
    for step in range(6):
        if step == 3:  # a new round: momentum starts afresh on both sides
            optimizer.reset()
            reference.state.clear()
        x = torch.randn(8, 1, 28, 28, generator=data)
        y = torch.randint(0, 10, (8,), generator=data)
        for model, opt in ((ours, optimizer), (theirs, reference)):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(next(ours.parameters()), next(start.parameters()))  # it trained
