"""Settings shared in style by every process (gateway, exporter, serve): see `flags`."""
