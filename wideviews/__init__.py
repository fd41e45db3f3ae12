"""wideviews for its users: `wideviews.client` reads a wideviews query server over its public HTTP API."""
