"""netsim.commands: click commands that are thin shells over the core (layer 6 of docs/design.md).

Each command parses its options (``options.py``), builds one core value and renders it. Commands
are loaded lazily by ``netsim.cli``; importing this package imports none of them.
"""
