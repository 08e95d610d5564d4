"""Linux interfaces, addresses, routes and policy rules, through pyroute2 only.

- watch:   rtnetlink watcher (links, addresses, default gateways) and the
           local locator set derived from it.
- mobile:  the mobile node's EID device (lmn0) and its source routing.
- routes:  EID-prefix routes for xTRs, removed again on exit.
- changes: the undo journal both of the latter build on.

Nothing here shells out to `ip`; see docs/net.md.
"""
from .changes import NetChanges, NetError, RTPROT_LISPCTL
from .mobile import MobileNode, Uplink
from .routes import EidRoutes
from .watch import (
    AddressAdded,
    AddressRemoved,
    GatewayChanged,
    IfAddress,
    InterfaceWatcher,
    Link,
    LinkDown,
    LinkUp,
    LocatorSpec,
    NetEvent,
    NetView,
    local_locators,
)

__all__ = [
    "AddressAdded", "AddressRemoved", "EidRoutes", "GatewayChanged", "IfAddress",
    "InterfaceWatcher", "Link", "LinkDown", "LinkUp", "LocatorSpec", "MobileNode",
    "NetChanges", "NetError", "NetEvent", "NetView", "RTPROT_LISPCTL", "Uplink",
    "local_locators",
]
