"""``python -m fleetshift_devcluster.demo``: the same as ``fleetshift-demo``."""

import sys

from fleetshift_devcluster.demo.cli import main

sys.exit(main())
