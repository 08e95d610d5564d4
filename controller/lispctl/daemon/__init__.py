"""The asyncio daemon: sockets, timers, miss events and the local API around sans-IO roles."""
