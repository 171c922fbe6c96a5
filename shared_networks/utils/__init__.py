"""The bottom layer: helpers every other layer may use (atomic files, true/false options, folder paths)."""

from shared_networks.utils.files import atomic_write_text, write_json_atomic
from shared_networks.utils.flags import as_bool
from shared_networks.utils.paths import as_dir

__all__ = ["as_bool", "as_dir", "atomic_write_text", "write_json_atomic"]
