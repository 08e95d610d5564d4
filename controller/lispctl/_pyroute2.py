"""pyroute2 without its package __init__ until something asks for it.

pyroute2's `__init__` imports every protocol it speaks (conntrack, IPDB/NDB,
nl80211, ipvs, wireguard...): ~40 ms of a core on every `lispctl up`, which
needs rtnetlink and ethtool only. `install()` registers the package as an
empty module with the real `__path__`, so `from pyroute2.iproute.linux
import IPRoute` loads that subtree alone; the first attribute asked of the
package itself that is not a submodule (`from pyroute2 import Conntrack`,
`pyroute2.__version__`) runs the real `__init__` into that same module, so
every other use of pyroute2 works as before, only later.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

_lock = threading.RLock()     # the real __init__ imports submodules that ask the package


def install() -> None:
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return                                  # not installed: its users report that
    module = importlib.util.module_from_spec(spec)
    state = {"loaded": False}

    def __getattr__(name: str) -> Any:
        if name.startswith("__") and name.endswith("__") and name not in ("__version__", "__all__"):
            raise AttributeError(name)
        # `from pyroute2 import netns` asks the package first: a submodule
        # is imported as such, without the rest
        if importlib.util.find_spec(f"pyroute2.{name}") is not None:
            return importlib.import_module(f"pyroute2.{name}")
        with _lock:
            if not state["loaded"]:
                state["loaded"] = True
                spec.loader.exec_module(module)    # type: ignore[union-attr]
        if name in module.__dict__:
            return module.__dict__[name]
        raise AttributeError(f"module 'pyroute2' has no attribute {name!r}")

    module.__getattr__ = __getattr__            # type: ignore[method-assign]
    sys.modules["pyroute2"] = module


def loaded_fully(module: ModuleType | None = None) -> bool:
    """Whether pyroute2's own __init__ has run (tests)."""
    module = module or sys.modules.get("pyroute2")
    return module is not None and "IPRoute" in module.__dict__
