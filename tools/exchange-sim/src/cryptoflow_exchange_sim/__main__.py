"""`python -m cryptoflow_exchange_sim`, same as the console script."""

import sys

from cryptoflow_exchange_sim.main import main

sys.exit(main())
