"""Training and evaluation machinery: optimiser groups, checkpoints, seeding, ignite handlers, metrics, distributed
runs, the check of command-line overrides."""
