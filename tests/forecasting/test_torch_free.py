"""Prediction paths never import torch; ResidualNet weights round-trip through .npz."""
import subprocess
import sys
import textwrap

import numpy as np

from forecasting import ResidualNet


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_residual_net_learns_and_roundtrips_without_torch(tmp_path):
    rng = np.random.default_rng(0)
    F = rng.normal(size=(400, 5))
    T = np.stack([F[:, 0] * 2.0, F[:, 1] - F[:, 2]], axis=1)
    net = ResidualNet(hidden=16, epochs=40, seed=0).fit(F, T)
    pred = net.predict(F)
    assert np.mean((pred - T) ** 2) < 0.2 * np.var(T)  # it learned something
    path = tmp_path / "net.npz"
    net.save(path)
    np.save(tmp_path / "F.npy", F[:3])
    got = _run(f"""
        import sys, numpy as np
        from forecasting import ResidualNet
        net = ResidualNet.load({str(path)!r})
        p = net.predict(np.load({str(tmp_path / 'F.npy')!r}))
        np.save({str(tmp_path / 'p.npy')!r}, p)
        print('torch' in sys.modules)
    """)
    assert got == "False"
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), pred[:3])


def test_sarima_fit_update_predict_never_import_torch():
    got = _run("""
        import sys
        import numpy as np, pandas as pd
        from forecasting import SarimaForecaster, SeasonalNaive
        idx = pd.date_range('2024-01-01', periods=24 * 10, freq='1h')
        y = pd.Series(100 + 50 * np.sin(2 * np.pi * np.arange(len(idx)) / 24), index=idx)
        m = SarimaForecaster().fit(y)
        m.update(120.0); m.predict(24)
        SeasonalNaive().fit(y).predict(5)
        print('torch' in sys.modules, 'statsmodels' in sys.modules)
    """)
    assert got == "False False"  # the ARMA fit is scipy's: statsmodels is a test-only dependency
