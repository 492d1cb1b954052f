"""File formats and helpers shared by every capability: atomic writes and hashing (io.py),
mlguard's encrypted container (container.py), loading a state_dict from a stream without
running code from it (state_dict.py), unwrapping checkpoints as they leak (checkpoint.py) and
loading a model file into its architecture (model.py)."""
