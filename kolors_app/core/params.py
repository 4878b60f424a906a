"""The names this module held before it was split, for modules being rewritten meanwhile; new code imports them
from core/request.py (the request), core/schema.py (the flat parameters), core/validation.py and core/errors.py.
"""

from kolors_app.core.errors import ValidationError
from kolors_app.core.request import (CONTROL_TYPES, INPAINT_AREAS, INPAINT_MODELS, MAX_CONTROL_UNITS, MAX_SEED,
                                     MODE_DEFAULTS, MODEL_NAME, MODES, OUTPAINT_SIDES, ControlUnit, GeneratedImage,
                                     GenerationRequest, GenerationResult, InitImage, Inpaint, Reference, concrete_seed,
                                     control_name)
from kolors_app.core.schema import images_needed, request_from_dict
from kolors_app.core.validation import validate

__all__ = ["CONTROL_TYPES", "INPAINT_AREAS", "INPAINT_MODELS", "MAX_CONTROL_UNITS", "MAX_SEED", "MODE_DEFAULTS",
           "MODEL_NAME", "MODES", "OUTPAINT_SIDES", "ControlUnit", "GeneratedImage", "GenerationRequest",
           "GenerationResult", "InitImage", "Inpaint", "Reference", "ValidationError", "concrete_seed", "control_name",
           "images_needed", "request_from_dict", "validate"]
