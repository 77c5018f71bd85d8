"""Switchyard, a local AI gateway: `mitmdump -s addons/router.py` (or `switchyard run`)."""

import sys
from pathlib import Path

# mitmproxy loads this file by path; make the project importable even without an install.
_root = str(Path(__file__).resolve().parent.parent)
if _root not in sys.path:
    sys.path.append(_root)

from addons import embeddings, images  # noqa: E402
from addons import hooks  # noqa: E402,F401  (installs a cheaper walk of the addon chain for every hook)
from addons.auth import ClientAuth  # noqa: E402
from addons.clientkeys import ClientKeys  # noqa: E402
from addons.cluster import Cluster  # noqa: E402
from addons.debug import Debug, holdings  # noqa: E402
from addons.dashboard import Dashboard  # noqa: E402
from addons.gateway import Gateway  # noqa: E402
from addons.guard import BrowserGuard  # noqa: E402
from addons.limits import ClientLimits  # noqa: E402
from addons.metrics import Metrics  # noqa: E402
from addons.monitor import FlowCap, Monitor, Quiet, WebColumns  # noqa: E402
from addons.settings import Settings  # noqa: E402
from addons.usage import UsageLedger  # noqa: E402

settings = Settings()
cluster = Cluster(settings)

gateway = Gateway(settings, cluster)
gateway.operations.update(images.OPERATIONS)
gateway.operations.update(embeddings.OPERATIONS)
metrics = Metrics(lambda: gateway.pool)
ledger = UsageLedger(settings)
debug = Debug(settings, lambda: holdings(gateway.pool))
keys = ClientKeys(settings, cluster)
dashboard = Dashboard(settings, gateway)

addons = [
    settings, cluster, Quiet(), ClientLimits(settings), BrowserGuard(settings), debug, keys, ClientAuth(settings, keys),
    metrics, dashboard, gateway, ledger, Monitor(ledger, metrics, keys, dashboard.live), FlowCap(settings), WebColumns(),
]
