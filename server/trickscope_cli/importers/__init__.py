"""Readers of other tools' logs, turned into trickscope runs (``trickscope import``).

A reader yields :class:`~trickscope_cli.importers.runs.ImportedRun` objects: a run's metadata,
its scalar series as packed columns and its histograms as buckets. :mod:`.upload` sends them to
a server through the REST API, in the wire format the agent uses.
"""
