"""The fixed parts of Cog's OpenAPI document: paths, request/response envelopes, status enums.

They reproduce, key for key, what Cog 0.16's FastAPI server (``python -m cog.command.openapi_schema``)
emits, because that is the document tens of thousands of published models carry and clients read.
Only ``Input``/``Output`` (and their training twins) and the per-``choices`` enums depend on the
predictor; ``schema.py`` builds those and hands them to :func:`build_document`.
"""

from __future__ import annotations

import copy
from typing import Any

_SCHEMAS = "#/components/schemas/"
_STATUSES = ["starting", "processing", "succeeded", "canceled", "failed"]
_WEBHOOK_EVENTS = ["start", "output", "logs", "completed"]
# Component names the document itself uses; a choices enum may not take them.
RESERVED_COMPONENTS = frozenset(
    {
        "HTTPValidationError",
        "ValidationError",
        "PredictionRequest",
        "PredictionResponse",
        "Status",
        "WebhookEvent",
        "Input",
        "Output",
        "TrainingInput",
        "TrainingOutput",
        "TrainingRequest",
        "TrainingResponse",
    }
)


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _SCHEMAS + name}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ok(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "Successful Response", "content": _json(schema)}


def _responses(schema: dict[str, Any], validation: bool = True) -> dict[str, Any]:
    responses = {"200": _ok(schema)}
    if validation:
        responses["422"] = {
            "description": "Validation Error",
            "content": _json(_ref("HTTPValidationError")),
        }
    return responses


def _path_param(name: str, title: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "title": title},
    }


_PREFER = {
    "name": "prefer",
    "in": "header",
    "required": False,
    "schema": {"title": "Prefer", "type": "string"},
}


def _nullable(title: str, **extra: Any) -> dict[str, Any]:
    return {"title": title, "type": "string", **extra, "nullable": True}


def _request(title: str, input_name: str, events_title: bool) -> dict[str, Any]:
    events: dict[str, Any] = {"title": "Webhook Events Filter"} if events_title else {}
    events.update(
        default=list(_WEBHOOK_EVENTS), items=_ref("WebhookEvent"), type="array", nullable=True
    )
    return {
        "properties": {
            "input": {**_ref(input_name), "nullable": True},
            "id": _nullable("Id"),
            "created_at": _nullable("Created At", format="date-time"),
            "context": {
                "title": "Context",
                "additionalProperties": {"type": "string"},
                "type": "object",
                "nullable": True,
            },
            "output_file_prefix": _nullable("Output File Prefix"),
            "webhook": _nullable("Webhook", maxLength=65536, minLength=1, format="uri"),
            "webhook_events_filter": events,
        },
        "type": "object",
        "title": title,
    }


def _response(
    title: str, input_name: str, output_name: str, output_nullable: bool
) -> dict[str, Any]:
    output = _ref(output_name)
    if output_nullable:
        output["nullable"] = True
    return {
        "properties": {
            "input": {**_ref(input_name), "nullable": True},
            "output": output,
            "id": _nullable("Id"),
            "version": _nullable("Version"),
            "created_at": _nullable("Created At", format="date-time"),
            "started_at": _nullable("Started At", format="date-time"),
            "completed_at": _nullable("Completed At", format="date-time"),
            "logs": {"type": "string", "title": "Logs", "default": ""},
            "error": _nullable("Error"),
            "status": {**_ref("Status"), "nullable": True},
            "metrics": {
                "title": "Metrics",
                "additionalProperties": True,
                "type": "object",
                "nullable": True,
            },
        },
        "type": "object",
        "title": title,
    }


def _enum(title: str, values: list[Any], kind: str = "string") -> dict[str, Any]:
    return {"type": kind, "enum": values, "title": title, "description": "An enumeration."}


_VALIDATION_ERRORS = {
    "HTTPValidationError": {
        "properties": {
            "detail": {"items": _ref("ValidationError"), "type": "array", "title": "Detail"}
        },
        "type": "object",
        "title": "HTTPValidationError",
    },
    "ValidationError": {
        "properties": {
            "loc": {
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                "type": "array",
                "title": "Location",
            },
            "msg": {"type": "string", "title": "Message"},
            "type": {"type": "string", "title": "Error Type"},
        },
        "type": "object",
        "required": ["loc", "msg", "type"],
        "title": "ValidationError",
    },
}


def _prediction_paths(streaming: bool) -> dict[str, Any]:
    predict: dict[str, Any] = {
        "summary": "Predict",
        "description": "Run a single prediction on the model",
        "operationId": "predict_predictions_post",
        "parameters": [dict(_PREFER)],
        "requestBody": {"content": _json(_ref("PredictionRequest"))},
        "responses": _responses(_ref("PredictionResponse")),
    }
    if streaming:
        # Cog >= 0.22 marks predictors decorated with @cog.streaming; 0.16 had no such marker.
        predict["x-cog-streaming"] = True
    idempotent_body = {"allOf": [_ref("PredictionRequest")], "title": "Prediction Request"}
    return {
        "/predictions": {"post": predict},
        "/predictions/{prediction_id}": {
            "put": {
                "summary": "Predict Idempotent",
                "description": "Run a single prediction on the model (idempotent creation).",
                "operationId": "predict_idempotent_predictions__prediction_id__put",
                "parameters": [_path_param("prediction_id", "Prediction ID"), dict(_PREFER)],
                "requestBody": {"required": True, "content": _json(idempotent_body)},
                "responses": _responses(_ref("PredictionResponse")),
            }
        },
        "/predictions/{prediction_id}/cancel": {
            "post": {
                "summary": "Cancel",
                "description": "Cancel a running prediction",
                "operationId": "cancel_predictions__prediction_id__cancel_post",
                "parameters": [_path_param("prediction_id", "Prediction ID")],
                "responses": _responses(
                    {"title": "Response Cancel Predictions  Prediction Id  Cancel Post"}
                ),
            }
        },
    }


def _training_paths() -> dict[str, Any]:
    return {
        "/trainings": {
            "post": {
                "summary": "Train",
                "operationId": "train_trainings_post",
                "parameters": [dict(_PREFER)],
                "requestBody": {"content": _json(_ref("TrainingRequest"))},
                "responses": _responses(_ref("TrainingResponse")),
            }
        },
        "/trainings/{training_id}": {
            "put": {
                "summary": "Train Idempotent",
                "operationId": "train_idempotent_trainings__training_id__put",
                "parameters": [_path_param("training_id", "Training ID"), dict(_PREFER)],
                "requestBody": {"required": True, "content": _json(_ref("TrainingRequest"))},
                "responses": _responses(_ref("TrainingResponse")),
            }
        },
        "/trainings/{training_id}/cancel": {
            "post": {
                "summary": "Cancel Training",
                "operationId": "cancel_training_trainings__training_id__cancel_post",
                "parameters": [_path_param("training_id", "Training ID")],
                "responses": _responses(
                    {"title": "Response Cancel Training Trainings  Training Id  Cancel Post"}
                ),
            }
        },
    }


def _simple_get(summary: str, operation_id: str, title: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "operationId": operation_id,
            "responses": _responses({"title": title}, validation=False),
        }
    }


def build_document(
    components: dict[str, Any], *, streaming: bool = False, training: bool = False
) -> dict[str, Any]:
    """Cog's whole OpenAPI document around the predictor-specific ``components``.

    ``components`` holds ``Input``, ``Output``, the choice enums and, with ``training``,
    ``TrainingInput``/``TrainingOutput``.
    """
    paths: dict[str, Any] = {
        "/shutdown": {
            "post": {
                "summary": "Start Shutdown",
                "operationId": "start_shutdown_shutdown_post",
                "responses": _responses(
                    {"title": "Response Start Shutdown Shutdown Post"}, validation=False
                ),
            }
        },
    }
    if training:
        paths.update(_training_paths())
    paths["/"] = _simple_get("Root", "root__get", "Response Root  Get")
    paths["/health-check"] = _simple_get(
        "Healthcheck", "healthcheck_health_check_get", "Response Healthcheck Health Check Get"
    )
    paths.update(_prediction_paths(streaming))

    schemas: dict[str, Any] = {"HTTPValidationError": _VALIDATION_ERRORS["HTTPValidationError"]}
    schemas.update(components)
    schemas["PredictionRequest"] = _request("PredictionRequest", "Input", events_title=False)
    schemas["PredictionResponse"] = _response("PredictionResponse", "Input", "Output", False)
    schemas["Status"] = _enum("Status", list(_STATUSES))
    if training:
        schemas["TrainingRequest"] = _request("TrainingRequest", "TrainingInput", events_title=True)
        schemas["TrainingResponse"] = _response(
            "TrainingResponse", "TrainingInput", "TrainingOutput", True
        )
    schemas["ValidationError"] = _VALIDATION_ERRORS["ValidationError"]
    schemas["WebhookEvent"] = _enum("WebhookEvent", list(_WEBHOOK_EVENTS))
    document = {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }
    # A fresh copy, so that a caller editing its document cannot alter the shared templates.
    return copy.deepcopy(document)
