"""deepbsde.adam.Adam against torch.optim.Adam(foreach=True): the same parameters bit for bit, and state dicts
that move between the two (snapshots, rollbacks and checkpoints written by either)."""

import copy

import pytest
import torch

from deepbsde.adam import Adam


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)  # tests may seed globally; the library never does
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def _train(model, optimizer, steps: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for k in range(steps):
        if k == steps // 2:
            optimizer.param_groups[0]["lr"] = 1e-3  # a schedule's change, as solve makes it
        x = torch.randn(32, 5, generator=gen)
        optimizer.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        optimizer.step()


def test_same_parameters_as_torch_foreach_adam_bit_for_bit():
    mine, theirs = _model(0), _model(0)
    _train(mine, Adam(mine.parameters(), lr=1e-2), 60, 1)
    _train(theirs, torch.optim.Adam(theirs.parameters(), lr=1e-2, eps=1e-8, foreach=True), 60, 1)
    for a, b in zip(mine.parameters(), theirs.parameters()):
        assert torch.equal(a, b)
    untrained = _model(0)
    assert not torch.equal(next(mine.parameters()), next(untrained.parameters()))


@pytest.mark.parametrize("direction", ["torch to ours", "ours to torch"])
def test_state_dicts_move_between_the_two(direction):
    a, b = _model(2), _model(2)
    first = torch.optim.Adam(a.parameters(), lr=1e-2, foreach=True) if direction == "torch to ours" \
        else Adam(a.parameters(), lr=1e-2)
    _train(a, first, 20, 3)
    b.load_state_dict(a.state_dict())
    second = Adam(b.parameters(), lr=0.5) if direction == "torch to ours" \
        else torch.optim.Adam(b.parameters(), lr=0.5, foreach=True)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    assert second.param_groups[0]["lr"] == first.param_groups[0]["lr"]
    _train(a, first, 10, 4)
    _train(b, second, 10, 4)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_refuses_a_state_of_other_parameters():
    opt = Adam(_model(0).parameters(), lr=1e-2)
    other = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=1e-2)
    with pytest.raises(ValueError, match="one group of 4 parameters"):
        opt.load_state_dict(other.state_dict())
