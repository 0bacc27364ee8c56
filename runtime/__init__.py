"""edgebind runtime: the torch-free core (stdlib + numpy at module level)."""
