"""The inversion encoder network now lives in `ganinv.models.encoder`; this module keeps old imports working."""
from ..models.encoder import (CARD_FORMAT, CARD_VERSION, W_AVG_TOLERANCE, Encoder, average_image,  # noqa: F401
                              load_encoder, restyle, save_encoder, style_groups, ws_index_resolution)

__all__ = ["Encoder", "average_image", "load_encoder", "restyle", "save_encoder", "style_groups",
           "ws_index_resolution"]
