"""``lab verify``: random probes in the lab namespace, the kernel's ``xtables-monitor --trace`` against
``netsim trace`` on the same rules."""

from __future__ import annotations

from netsim.errors import LabError
from netsim.lab import state as st
from netsim.lab.runner import Runner


class Report:
    agreed = False

    def lines(self, *, verbose: bool = False) -> list[str]:
        return []


def verify(runner: Runner, state: st.LabState, *, probes: int, seed: int | None) -> Report:
    raise LabError("lab verify needs netsim's trace engine (netsim.netfilter.engine), which is not installed yet")
