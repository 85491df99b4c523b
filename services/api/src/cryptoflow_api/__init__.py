"""cryptoflow read API."""
