"""The pricing rules, as pure functions: what a phase of an instance's life costs, and who is
charged for it (docs/billing.md).

Money is integer nano-USD (10⁻⁹ $): a hardware price per second from the hardware table
(`Hardware.price_per_second`, USD) becomes `unit_price_nanos` once, exactly (through Decimal),
and a cost is `quantity × unit_price_nanos`, rounded half up to a whole nano-dollar.

Replicate's rule: a public model bills its active time only; a private model and a deployment
bill setup, idle and active time. A model with a per-output `pricing` bills its outputs instead
of its active seconds (as fal does); its setup and idle time follow the rule above.

`pricing` (the `models.pricing` JSON, set by `PATCH /v1/models/{owner}/{name}`):

- `{"unit": "image", "price_nanos": 3000000}`: each output is one unit (a list output counts
  its items; any other output counts 1; no output counts 0);
- `{"unit": "second of audio", "metric": "audio_seconds", "price_nanos": 100000}`: the units
  are the number the model recorded as that metric (`record_metric("audio_seconds", 12.5)` in
  Cog, shown in `metrics`); a prediction that recorded none bills 0 units.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from .hardware import Hardware

NANOS_PER_USD = 1_000_000_000
Phase = Literal["setup", "active", "idle", "output"]
PHASES: tuple[Phase, ...] = ("setup", "active", "idle", "output")
SECOND = "second"
UNIT = re.compile(r"[a-z][a-z0-9 ._-]{0,19}")  # the ledger's `unit` column holds 20
METRIC = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,99}")
MAX_PRICE_NANOS = 1_000 * NANOS_PER_USD  # $1,000 per unit: anything above is a typo
PRICING_FIELDS = ("unit", "price_nanos", "metric")


class PricingError(ValueError):
    """A `pricing` that cannot be used; the message says which field and why, in one line."""


@dataclass(frozen=True)
class Pricing:
    """A price per output: `price_nanos` per `unit`, counted from the output or read from the
    metric `metric`."""

    unit: str
    price_nanos: int
    metric: str | None = None

    def json(self) -> dict[str, Any]:
        """As stored in `models.pricing`."""
        body: dict[str, Any] = {"unit": self.unit, "price_nanos": self.price_nanos}
        if self.metric is not None:
            body["metric"] = self.metric
        return body


@dataclass(frozen=True)
class Charge:
    """One ledger row's figures: `quantity` of `unit` at `unit_price_nanos`; `billed` false
    when the rules do not charge it (its cost is then 0, its seconds kept)."""

    phase: Phase
    seconds: float
    quantity: float
    unit: str
    unit_price_nanos: int
    cost_nanos: int
    billed: bool


def parse_pricing(value: object) -> Pricing | None:
    """The `pricing` JSON checked (None: none). Raises `PricingError`."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise PricingError('must be an object such as {"unit": "image", "price_nanos": 3000000}')
    unknown = sorted(set(value) - set(PRICING_FIELDS))
    if unknown:
        raise PricingError(f"unknown field {unknown[0]!r}; expected {', '.join(PRICING_FIELDS)}")
    unit = value.get("unit")
    if not isinstance(unit, str) or not UNIT.fullmatch(unit) or unit == SECOND:
        raise PricingError(
            "unit must be 1 to 20 lowercase letters, digits, spaces, '.', '_' or '-' naming "
            f"what is sold (image, second of audio), not {SECOND!r}; got {unit!r}"
        )
    price = value.get("price_nanos")
    if isinstance(price, bool) or not isinstance(price, int) or not 0 <= price <= MAX_PRICE_NANOS:
        raise PricingError(
            f"price_nanos must be a whole number of nano-USD from 0 to {MAX_PRICE_NANOS} "
            f"(3000000 is $0.003); got {price!r}"
        )
    metric = value.get("metric")
    if metric is not None and (not isinstance(metric, str) or not METRIC.fullmatch(metric)):
        raise PricingError(f"metric must be the name of a metric the model records; got {metric!r}")
    return Pricing(unit, price, metric)


def nanos_per_second(hardware: Hardware) -> int:
    """The SKU's price per second in nano-USD, exact for the table's decimal prices."""
    return int(
        (Decimal(repr(hardware.price_per_second)) * NANOS_PER_USD).to_integral_value(ROUND_HALF_UP)
    )


def cost_nanos(quantity: float, unit_price_nanos: int) -> int:
    """`quantity × unit_price_nanos`, rounded half up to a whole nano-dollar."""
    if quantity <= 0 or unit_price_nanos <= 0:
        return 0
    exact = Decimal(repr(float(quantity))) * unit_price_nanos
    return int(exact.to_integral_value(ROUND_HALF_UP))


def is_billed(phase: Phase, *, private: bool, deployment: bool) -> bool:
    """Replicate's rule: active time and outputs always; setup and idle time only for a
    private model or a deployment (a public model's instances are the platform's to keep)."""
    if phase in ("active", "output"):
        return True
    return private or deployment


def seconds_charge(
    phase: Phase, seconds: float, hardware: Hardware, *, private: bool, deployment: bool
) -> Charge:
    """`seconds` of `hardware` in `phase`."""
    seconds = max(0.0, float(seconds))
    price = nanos_per_second(hardware)
    billed = is_billed(phase, private=private, deployment=deployment)
    cost = cost_nanos(seconds, price) if billed else 0
    return Charge(phase, seconds, seconds, SECOND, price, cost, billed)


def output_units(pricing: Pricing, output: Any, metrics: Mapping[str, Any] | None) -> float:
    """How many `pricing.unit` a prediction produced (see the module doc)."""
    if pricing.metric is not None:
        value = (metrics or {}).get(pricing.metric)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            return 0.0
        return max(0.0, float(value))
    if output is None:
        return 0.0
    if isinstance(output, list):
        return float(len(output))
    return 1.0


def output_charge(
    pricing: Pricing, seconds: float, output: Any, metrics: Mapping[str, Any] | None
) -> Charge:
    """A per-output priced prediction's row: its units at the model's price (its seconds are
    kept for the record, not charged)."""
    units = output_units(pricing, output, metrics)
    cost = cost_nanos(units, pricing.price_nanos)
    return Charge("output", max(0.0, float(seconds)), units, pricing.unit, pricing.price_nanos,
                  cost, True)  # fmt: skip


def usd(nanos: int) -> str:
    """Nano-USD as an exact decimal string of dollars with 9 places (`"0.000123450"`)."""
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), NANOS_PER_USD)
    return f"{sign}{whole}.{frac:09d}"
