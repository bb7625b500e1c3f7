"""The shapes world: the embedded default domain (see TOY_SPEC.md)."""
