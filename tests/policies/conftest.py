import numpy as np
import pytest

from policies.cascade import Cascade
from policies.logs import generate_logs


@pytest.fixture(scope="session")
def cascade():
    return Cascade()


@pytest.fixture(scope="session")
def tiny_logs(cascade):
    return generate_logs(cascade, 20_000, seed=11)


@pytest.fixture(scope="session")
def tiny_bundle(cascade, tiny_logs, tmp_path_factory):
    """A briefly trained AWRQ-Mixer exported to a temporary bundle: (json path, fitted model)."""
    from policies.training import ValueModel
    from policies.training.export import export_bundle

    model = ValueModel("awrq", steps=40, batch_size=256, seed=3).fit(tiny_logs, cascade)
    path = export_bundle(model, tmp_path_factory.mktemp("bundle") / "tiny")
    return path, model


@pytest.fixture(scope="session")
def tiny_shared_bundle(cascade, tiny_logs, tmp_path_factory):
    """The same with the shared request trunk (``request="shared"``, narrower): (json path, fitted model)."""
    from policies.training import ValueModel
    from policies.training.export import export_bundle

    model = ValueModel("awrq", steps=40, batch_size=256, seed=3, request="shared", hidden=32).fit(tiny_logs, cascade)
    path = export_bundle(model, tmp_path_factory.mktemp("bundle_shared") / "tiny_shared")
    return path, model


@pytest.fixture
def requests(cascade):
    rng = np.random.default_rng(5)
    return cascade.sample_features(300, rng.uniform(0, 24, 300), rng)
