"""The scan's weight-key check, now the weight scheme's read (schemes/weight.py): the scan
reads weight keys through WeightScheme.read_many like every registered scheme. Kept for
callers of ``check_weights`` (register_state_dict_checker's function form)."""

from ..schemes.weight import check_weights, read_stacked

__all__ = ["check_weights", "read_stacked"]
