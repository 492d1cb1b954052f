"""File formats and helpers shared by every capability: atomic writes and hashing (io.py),
mlguard's encrypted container (container.py), and loading a state_dict from a stream
without running code from it (state_dict.py)."""
