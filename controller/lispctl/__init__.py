__version__ = "0.1.0"

# pyroute2's package __init__ imports every protocol it has; lispctl uses
# rtnetlink and ethtool (see _pyroute2.py)
from lispctl import _pyroute2

_pyroute2.install()
