"""The daily job's HTML report: one self-contained page (plots embedded as PNG data URIs).

:func:`write_report` renders the results of one run (:class:`volcal.jobs.SnapshotResult`) and,
when the store has history, charts of it (:func:`history_from_store`). Nothing is fetched when
the page is viewed: no scripts, fonts or images from the network.
"""

from volcal.report.html import atomic_write_text, history_from_store, render_report, write_report

__all__ = ["atomic_write_text", "history_from_store", "render_report", "write_report"]
