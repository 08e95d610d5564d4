"""BPF data plane: tc programs in bpf/ loaded with bcc, maps pinned on bpffs.

    from lispctl.datapath import Datapath, DatapathError, Counters
    with Datapath(instance="xtr1") as dp:
        dp.attach_eid_interface("veth0"); dp.attach_rloc_interface("eth1")
        dp.add_local_rloc(addr); dp.set_mapping(eid, rlocs)

Counters of a running instance without compiling (seconds saved):
    from lispctl.datapath.pinned import read_counters, read_mapping_stats

See docs/datapath.md.
"""
from lispctl.datapath.errors import DatapathError

__all__ = ["Datapath", "DatapathError", "Counters"]


def __getattr__(name: str):
    # Lazy: importing the package must not need bcc (typing, CLI help).
    if name in ("Datapath", "Counters"):
        from lispctl.datapath import datapath as _dp
        return getattr(_dp, name)
    raise AttributeError(name)
