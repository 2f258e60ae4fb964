"""Shared small fixtures for the offline-RL tests (tiny data, tiny models)."""
import pytest

from policies.offline.sim import AdEnvironment


@pytest.fixture(scope="session")
def small_env():
    return AdEnvironment(n_users=240, horizon=10, seed=3)


@pytest.fixture(scope="session")
def small_journeys(small_env):
    return small_env.generate()
