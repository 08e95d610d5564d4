"""The one exception of the datapath package."""
from __future__ import annotations


class DatapathError(RuntimeError):
    """BPF/XDP unavailable, compile failure, attach failure or a bad request
    (the message says which and what to do)."""
