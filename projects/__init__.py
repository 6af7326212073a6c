"""kiln's model families: one package per family, shared pieces in `projects.common`."""
