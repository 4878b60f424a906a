"""The names this module held before it was split, for modules being rewritten meanwhile; new code imports them
from metadata/png_chunks.py (the PNG chunks), metadata/infotext.py (A1111's text) and core/schema.py.
"""

from kolors_app.core.schema import clean_parameters
from kolors_app.metadata.infotext import (PARAMETERS_KEY, ImageParameters, format_parameters, parse_parameters,
                                          scheduler_from_a1111, split_parameters)
from kolors_app.metadata.png_chunks import (JSON_KEY, png_bytes, png_info, read_image_parameters, read_parameters,
                                            save_png)
from kolors_app.metadata.settings_line import quote, settings_pairs, unquote

__all__ = ["JSON_KEY", "PARAMETERS_KEY", "ImageParameters", "clean_parameters", "format_parameters",
           "parse_parameters", "png_bytes", "png_info", "quote", "read_image_parameters", "read_parameters",
           "save_png", "scheduler_from_a1111", "settings_pairs", "split_parameters", "unquote"]
