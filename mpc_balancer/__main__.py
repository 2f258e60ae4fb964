"""``python -m mpc_balancer``: the ``mpc-balancer`` command."""
import sys

from .cli import main

sys.exit(main())
