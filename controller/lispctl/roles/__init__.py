"""Sans-IO protocol state machines: bytes and time in, effects out."""
