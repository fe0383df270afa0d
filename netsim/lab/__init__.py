"""netsim.lab: a real pod network namespace running the compiled rules, the DNS agent and recording
listeners — netsim's proof that its model is the kernel's.

Owns: namespaces, the veth to a "node" namespace, applying rules, running the agent and listeners,
kernel probes and traces (``control``, ``runner``, ``netns``, ``state``, ``listeners``, ``verify``, ``cli``).
Never does: touch the host's network namespace (its links, routes or netfilter tables).

Public entry points: ``control.up``/``control.down``/``control.LabSpec``, ``inputs.lab_spec``, the runners in
``runner``, ``verify.verify``, and ``cli.lab_group``. Nothing is re-exported here on purpose: the listeners and
the probe sender run as ``python -m netsim.lab.listeners``/``netsim.lab.probe`` in fresh processes as other
uids, and importing this package must stay as cheap as the standard library. pyroute2 is imported only by
``netsim.lab.netns``, when the real runner first needs netlink.
"""

__all__: list[str] = []
