"""Mappings: EID prefixes, locators, the local database and the map-cache."""
