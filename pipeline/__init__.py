"""The stages of the data pipeline: one module per stage."""
