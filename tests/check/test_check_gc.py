"""``check_paths`` turns Python's cycle collector off while it reads and checks a dump: afterwards the
collector is as it was, and nothing it made is left frozen (what others froze stays frozen)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from netsim.check import check_paths
from netsim.errors import NetsimError

RULES = Path(__file__).resolve().parents[2] / "rules" / "mesh" / "mtls-503-containerport"


@pytest.mark.parametrize("enabled", [True, False])
def test_the_cycle_collector_is_left_as_it_was(enabled: bool) -> None:
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        frozen = gc.get_freeze_count()  # other parts of netsim freeze what they built (rule sets, DNS tables)
        report = check_paths([RULES])
        assert report.workloads >= 1
        assert gc.isenabled() is enabled and gc.get_freeze_count() <= frozen  # (frozen objects freed: fewer)
        with pytest.raises(NetsimError, match=r"missing\.yaml"):  # the collector is restored all the same
            check_paths([RULES / "missing.yaml"])
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
