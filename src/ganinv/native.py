"""Old home of the module-folder storage; everything saved now goes through `ganinv.models.storage`."""
from .models.storage import CARD_FILE, WEIGHTS_FILE  # noqa: F401
from .models.storage import load_module as load_module_folder  # noqa: F401
from .models.storage import save_module as save_module_folder  # noqa: F401

__all__ = ["CARD_FILE", "WEIGHTS_FILE", "load_module_folder", "save_module_folder"]
