"""Network-namespace lab: topologies from netns-lab/*.toml built with pyroute2.

    from lispctl.lab import Lab, load
    with Lab(load("dataplane")) as lab:
        lab.run("hostA", ["ping", "-c", "1", "10.2.0.2"], check=True)

See docs/lab.md.
"""
from .procs import LabProcess, ProcessError
from .runner import Lab, LabError, down, kept_labs
from .topology import Topology, available, load, loads

__all__ = ["Lab", "LabError", "LabProcess", "ProcessError", "Topology", "available", "down",
           "kept_labs", "load", "loads"]
