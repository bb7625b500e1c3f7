"""The data layer under both stages: image and prompt sources, pair encoding, banks."""
