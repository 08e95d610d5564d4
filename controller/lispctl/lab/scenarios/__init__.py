"""What `python -m lispctl.lab --topology NAME` does once NAME is built.

A module scenarios/NAME.py with `run(lab, say) -> bool` (True: traffic
flowed as expected) is that topology's demonstration. Topologies without one
are built, their declared processes started, and described.
"""
