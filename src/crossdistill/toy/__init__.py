"""The shapes world: the embedded default domain (specified in docs/shapes_world.md)."""
