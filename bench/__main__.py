"""`python -m bench` (what `make bench` runs): the gateway bench in bench/gateway_bench.py."""

import sys

from bench.gateway_bench import main

sys.exit(main())
