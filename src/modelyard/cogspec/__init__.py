"""Reading a Cog package: cog.yaml, the OpenAPI schema from source, input validation. Pure.

Nothing here starts a process, touches the network or imports the model's code.
"""

from .config import CogConfig, PredictorRef, load_config, parse_ref
from .errors import CogSpecError
from .inputs import FieldError, InputValidationError, file_fields, validate_input
from .schema import predictor_schema

__all__ = [
    "CogConfig",
    "CogSpecError",
    "FieldError",
    "InputValidationError",
    "PredictorRef",
    "file_fields",
    "load_config",
    "parse_ref",
    "predictor_schema",
    "validate_input",
]
