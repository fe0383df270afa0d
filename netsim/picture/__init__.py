"""Pictures of what netsim computed: one self-contained HTML page or SVG per answer (``--format html|svg``).

Owns: :mod:`netsim.picture.view` (a trace's lanes, hooks, tables, chains and steps, built from the same
values its JSON is rendered from: the :class:`~netsim.workload.verdict.Decision` and each hop's
``trace_json`` steps), :mod:`netsim.picture.html` (the pages of ``trace``, ``trace --follow-up``,
``trace --matrix``, ``mesh hop`` and ``diagnose``) and :mod:`netsim.picture.svg` (the path alone).

Never does: compute a verdict, trace a packet, read files or print. Every text from the input (rule
comments, object names) is escaped; the pages carry a Content-Security-Policy that allows no script,
no network and no external resource.
"""
