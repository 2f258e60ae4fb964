"""Suite-wide settings: hypothesis runs derandomised, so a CI run on a fresh machine draws the
same examples as the last run on any other (new examples come from changing the strategies or
running with ``HYPOTHESIS_PROFILE=explore``, which draws fresh ones)."""
import os

from hypothesis import settings

settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
