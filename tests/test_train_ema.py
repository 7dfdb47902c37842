"""EMA of trainable parameters against a hand computation."""

import pytest
import torch
from torch import nn

from sanawm.errors import UserInputError
from sanawm.train.ema import EMA


def _model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2))
    m[1].bias.requires_grad_(False)  # frozen parameters are not tracked
    return m


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_matches_hand_computation(warmup):
    model = _model()
    ema = EMA(model, decay=0.9, warmup=warmup)
    assert set(ema.shadow) == {"0.weight", "0.bias", "1.weight"}
    hand = {n: p.detach().double().clone() for n, p in model.named_parameters() if p.requires_grad}
    for n in range(6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        d = min(0.9, (1 + n) / (10 + n)) if warmup else 0.9
        assert ema.current_decay() == pytest.approx(d)
        ema.update()
        for name, p in model.named_parameters():
            if name in hand:
                hand[name] = d * hand[name] + (1 - d) * p.detach().double()
    for name, value in hand.items():
        torch.testing.assert_close(ema.shadow[name].double(), value, rtol=1e-6, atol=1e-6)
    assert ema.updates == 6


def test_ema_state_round_trip_and_errors():
    model = _model()
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update()
    state = ema.full_state()
    other = EMA(_model(), decay=0.5)
    other.load_full_state(state, ema.updates)
    assert other.updates == 1
    for name in state:
        assert torch.equal(other.shadow[name], ema.shadow[name])
    with pytest.raises(UserInputError, match="lacks"):
        other.load_full_state({}, 0)
    with pytest.raises(UserInputError, match="decay"):
        EMA(model, decay=1.0)
