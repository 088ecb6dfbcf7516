"""File formats: HDF5 dumps with provenance, safe checkpoints, tidy tables, atomic writes."""
