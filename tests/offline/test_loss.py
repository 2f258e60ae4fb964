"""The channel loss is a cross-entropy over the channel axis, masked over padding."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from policies.offline._torch_nets import channel_cross_entropy, multitask_loss, taken_reward_loss  # noqa: E402


def _data(seed=0, b=4, t=6, a=3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, a, generator=g)
    actions = torch.randint(0, a, (b, t), generator=g)
    mask = torch.ones(b, t)
    mask[0, 4:] = 0
    actions[0, 4:] = -1
    return logits, actions, mask


def test_matches_manual_softmax_over_channels():
    logits, actions, mask = _data()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, actions.clamp(min=0)[..., None])[..., 0]
    manual = -(logp * mask).sum() / mask.sum()
    assert torch.allclose(channel_cross_entropy(logits, actions, mask), manual)


def test_invariant_to_per_step_shift_but_not_per_channel_shift():
    """Adding a constant to all channels at one step leaves a channel-axis softmax unchanged;
    a time-axis softmax (the authors' defect) would change. Shifting along time must matter."""
    logits, actions, mask = _data(1)
    base = channel_cross_entropy(logits, actions, mask)
    per_step = torch.randn(4, 6, 1) * 5
    assert torch.allclose(channel_cross_entropy(logits + per_step, actions, mask), base, atol=1e-5)
    # the time-axis version is not invariant to that shift: our loss is not that one
    def time_axis(lg):
        lp = torch.log_softmax(lg, dim=1).gather(-1, actions.clamp(min=0)[..., None])[..., 0]
        return -(lp * mask).sum() / mask.sum()
    assert not torch.allclose(time_axis(logits + per_step), time_axis(logits))
    per_channel = torch.tensor([0.0, 3.0, -2.0])
    assert not torch.allclose(channel_cross_entropy(logits + per_channel, actions, mask), base)


def test_padding_is_ignored():
    logits, actions, mask = _data(2)
    changed = logits.clone()
    changed[0, 4:] = 100 * torch.randn(2, 3)
    assert torch.allclose(channel_cross_entropy(changed, actions, mask),
                          channel_cross_entropy(logits, actions, mask))


def test_multitask_weights():
    logits, actions, mask = _data(3)
    r_out = torch.randn_like(logits)
    rewards = (torch.rand(actions.shape) < 0.3).float()
    ce = channel_cross_entropy(logits, actions, mask)
    rl = taken_reward_loss(r_out, actions, rewards, mask)
    got = multitask_loss(logits, r_out, actions, rewards, mask, action_weight=0.7, reward_weight=2.0)
    assert torch.allclose(got, 0.7 * ce + 2.0 * rl)
    # the reward loss uses the logged channel's output only
    other = r_out.clone()
    m = torch.ones_like(other, dtype=torch.bool)
    m.scatter_(-1, actions.clamp(min=0)[..., None], False)
    other[m] += 50.0
    assert torch.allclose(taken_reward_loss(other, actions, rewards, mask), rl)
    np.testing.assert_(float(rl) > 0)
