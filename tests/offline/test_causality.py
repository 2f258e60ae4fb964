"""Causality: perturbing future inputs never changes past outputs (forward, train mode, numpy)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from policies.offline import numpy_net  # noqa: E402
from policies.offline._torch_nets import SequenceNet, params_to_numpy  # noqa: E402

T, CUT, F, A = 12, 7, 9, 3


def _net(dropout=0.0, n_conv=2, attention=True):
    torch.manual_seed(0)
    return SequenceNet(F, A, d_model=16, n_conv=n_conv, attention=attention, n_heads=2,
                       dropout=dropout)


def _inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, T, F, generator=g)
    y = x.clone()
    y[:, CUT:] = torch.randn(3, T - CUT, F, generator=g) * 10
    return x, y


@pytest.mark.parametrize("n_conv,attention", [(2, True), (0, True), (3, False)])
def test_eval_forward_is_causal(n_conv, attention):
    net = _net(n_conv=n_conv, attention=attention).eval()
    x, y = _inputs()
    with torch.no_grad():
        a1, r1 = net(x)
        a2, r2 = net(y)
    assert torch.equal(a1[:, :CUT], a2[:, :CUT]) and torch.equal(r1[:, :CUT], r2[:, :CUT])
    assert not torch.allclose(a1[:, CUT:], a2[:, CUT:])  # the perturbation does reach the future


def test_train_mode_with_dropout_is_causal():
    net = _net(dropout=0.5).train()
    x, y = _inputs()
    torch.manual_seed(42)
    a1, r1 = net(x)
    torch.manual_seed(42)  # same dropout masks for both passes
    a2, r2 = net(y)
    assert torch.equal(a1[:, :CUT], a2[:, :CUT]) and torch.equal(r1[:, :CUT], r2[:, :CUT])


def test_attention_weights_on_future_are_exactly_zero_with_dropout():
    net = _net(dropout=0.5).train()
    x, _ = _inputs()
    h = torch.randn(4, T, 16)
    for _ in range(5):
        w, _ = net.attn.weights(h)
        future = ~torch.ones(T, T, dtype=torch.bool).tril()
        assert float(w[..., future].detach().abs().max()) == 0.0


def test_numpy_forward_matches_torch_and_is_causal():
    net = _net(dropout=0.3).eval()
    x, y = _inputs()
    with torch.no_grad():
        a_t, r_t = net(x)
    p = params_to_numpy(net)
    a_n, r_n = numpy_net.forward(p, x.numpy(), n_conv=2, attention=True, n_heads=2)
    np.testing.assert_allclose(a_n, a_t.numpy(), atol=1e-4)
    np.testing.assert_allclose(r_n, r_t.numpy(), atol=1e-4)
    a_y, _ = numpy_net.forward(p, y.numpy(), n_conv=2, attention=True, n_heads=2)
    np.testing.assert_array_equal(a_n[:, :CUT], a_y[:, :CUT])


def test_model_outputs_do_not_depend_on_future_logged_steps(small_journeys):
    """End to end through the tokens: changing the log after step CUT leaves earlier outputs."""
    from policies.offline import MTORL

    j = small_journeys.subset(np.arange(60))
    m = MTORL(d_model=8, max_epochs=1, seed=0).fit(j)
    j2 = j.subset(np.arange(60))
    j2.actions[:, 6:] = (j2.actions[:, 6:] + 1) % j.n_channels
    j2.rewards[:, 6:] = 1 - j2.rewards[:, 6:]
    j2.states[:, 6:] += 5.0
    for fn in (m.action_proba, m.predict_reward):
        np.testing.assert_array_equal(fn(j)[:, :6], fn(j2)[:, :6])
        assert not np.allclose(fn(j)[:, 7:], fn(j2)[:, 7:])
