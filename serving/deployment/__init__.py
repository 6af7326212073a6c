"""Deployment: loading a registered version, the store of served slots and their live swap, the registry
watcher, dynamic batching and artifact download."""
