"""netsim.lab: a real pod network namespace running the compiled rules, the DNS agent and recording
listeners — netsim's proof that its model is the kernel's.

Owns: namespaces, the veth to a "node" namespace, applying rules, running the agent and listeners,
kernel probes and traces (``control``, ``runner``, ``netns``, ``state``, ``listeners``, ``verify``, ``cli``).
Never does: touch the host's network namespace (its links, routes or netfilter tables).

Importing this package is cheap: pyroute2 is imported only by ``netsim.lab.netns``, when the real runner
first needs netlink.
"""
