"""Option chains: one underlying at one instant, forwards by put-call parity, quote filters.

* :class:`OptionChain` (and :class:`ChainSlice`, one expiry), :func:`chains_from_quotes`;
* :func:`infer_forward`, :func:`infer_forwards`, :class:`ParityForward`, :func:`parity_pairs`;
* :class:`QuoteFilters`, :func:`filter_quotes`, :data:`FILTER_REASONS`.

No I/O here except :meth:`OptionChain.to_parquet` / :meth:`OptionChain.read_parquet`; loaders of
exchange and vendor formats live in :mod:`volcal.data.snapshots`.
"""

from volcal.chain.core import QUOTE_COLUMNS, ChainSlice, OptionChain, chains_from_quotes
from volcal.chain.filters import FILTER_REASONS, QuoteFilters, filter_quotes
from volcal.chain.forwards import ParityForward, infer_forward, infer_forwards, parity_pairs

__all__ = [
    "FILTER_REASONS",
    "QUOTE_COLUMNS",
    "ChainSlice",
    "OptionChain",
    "ParityForward",
    "QuoteFilters",
    "chains_from_quotes",
    "filter_quotes",
    "infer_forward",
    "infer_forwards",
    "parity_pairs",
]
