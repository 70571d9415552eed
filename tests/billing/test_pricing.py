"""The pricing rules (billing/pricing.py): prices in nano-USD, who is billed for which phase,
per-output pricing and its validation."""

from __future__ import annotations

from typing import Any

import pytest

from modelyard.billing.hardware import CPU, Hardware, HardwareTable
from modelyard.billing.pricing import (
    Pricing,
    PricingError,
    cost_nanos,
    is_billed,
    nanos_per_second,
    output_charge,
    output_units,
    parse_pricing,
    seconds_charge,
    usd,
)

T4 = HardwareTable().get("gpu-t4")


def test_the_default_prices_become_exact_nanos() -> None:
    assert nanos_per_second(CPU) == 100_000  # $0.000100/s
    assert T4 is not None and nanos_per_second(T4) == 225_000  # $0.000225/s
    h100 = HardwareTable().get("gpu-h100-8x")
    assert h100 is not None and nanos_per_second(h100) == 12_200_000
    # Every default price is a whole number of nano-dollars: nothing is lost converting.
    for hardware in HardwareTable():
        assert nanos_per_second(hardware) == round(hardware.price_per_second * 1e9)


def test_an_overridden_price_is_converted_too() -> None:
    custom = Hardware("gpu-x", "X", 0.0000123456789)
    assert nanos_per_second(custom) == 12_346  # rounded half up to a nano-dollar


def test_costs_round_half_up_to_a_nano_dollar() -> None:
    assert cost_nanos(2.5, 225_000) == 562_500
    assert cost_nanos(0.0000033, 100_000) == 0  # 0.33 nano-dollars
    assert cost_nanos(0.000005, 100_000) == 1  # exactly half: up
    assert cost_nanos(0.0, 225_000) == 0
    assert cost_nanos(-1.0, 225_000) == 0


@pytest.mark.parametrize(
    ("phase", "private", "deployment", "billed"),
    [
        ("active", False, False, True),
        ("setup", False, False, False),
        ("idle", False, False, False),
        ("output", False, False, True),
        ("active", True, False, True),
        ("setup", True, False, True),
        ("idle", True, False, True),
        ("setup", False, True, True),
        ("idle", False, True, True),
    ],
)
def test_replicates_rule(phase: Any, private: bool, deployment: bool, billed: bool) -> None:
    """Public models bill active time only; private models and deployments bill all."""
    assert is_billed(phase, private=private, deployment=deployment) is billed


def test_an_unbilled_phase_keeps_its_seconds_at_no_cost() -> None:
    assert T4 is not None
    charge = seconds_charge("setup", 12.0, T4, private=False, deployment=False)
    assert (charge.seconds, charge.cost_nanos, charge.billed) == (12.0, 0, False)
    assert charge.unit_price_nanos == 225_000
    charge = seconds_charge("setup", 12.0, T4, private=True, deployment=False)
    assert (charge.cost_nanos, charge.billed, charge.unit) == (2_700_000, True, "second")


def test_outputs_are_counted() -> None:
    image = Pricing("image", 3_000_000)
    assert output_units(image, ["a.png", "b.png", "c.png"], {}) == 3
    assert output_units(image, "a.png", {}) == 1
    assert output_units(image, {"x": 1}, {}) == 1
    assert output_units(image, None, {}) == 0
    assert output_units(image, [], {}) == 0
    charge = output_charge(image, 4.2, ["a", "b"], {"predict_time": 4.2})
    assert (charge.phase, charge.quantity, charge.unit, charge.cost_nanos) == (
        "output", 2.0, "image", 6_000_000,
    )  # fmt: skip
    assert charge.seconds == 4.2 and charge.billed


def test_a_metric_gives_the_units() -> None:
    audio = Pricing("second of audio", 100_000, metric="audio_seconds")
    assert output_units(audio, "x.wav", {"audio_seconds": 12.5}) == 12.5
    assert output_units(audio, "x.wav", {}) == 0  # not recorded: nothing to bill
    assert output_units(audio, "x.wav", {"audio_seconds": "12"}) == 0
    assert output_units(audio, "x.wav", {"audio_seconds": True}) == 0
    assert output_charge(audio, 1.0, "x.wav", {"audio_seconds": 12.5}).cost_nanos == 1_250_000


def test_pricing_is_validated() -> None:
    assert parse_pricing(None) is None
    assert parse_pricing({"unit": "image", "price_nanos": 3_000_000}) == Pricing("image", 3_000_000)
    body = {"unit": "second of audio", "metric": "audio_seconds", "price_nanos": 1}
    assert parse_pricing(body) == Pricing("second of audio", 1, "audio_seconds")
    assert parse_pricing(body).json() == body  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("image", "must be an object"),
        ({"unit": "image"}, "price_nanos"),
        ({"unit": "image", "price_nanos": -1}, "price_nanos"),
        ({"unit": "image", "price_nanos": 0.5}, "price_nanos"),
        ({"unit": "image", "price_nanos": True}, "price_nanos"),
        ({"unit": "image", "price_nanos": 10**13}, "price_nanos"),
        ({"unit": "", "price_nanos": 1}, "unit"),
        ({"unit": "second", "price_nanos": 1}, "unit"),
        ({"unit": "Image", "price_nanos": 1}, "unit"),
        ({"unit": "x" * 21, "price_nanos": 1}, "unit"),
        ({"unit": "image", "price_nanos": 1, "metric": 3}, "metric"),
        ({"unit": "image", "price_nanos": 1, "currency": "eur"}, "currency"),
    ],
)
def test_bad_pricing_says_what_is_wrong(value: Any, says: str) -> None:
    with pytest.raises(PricingError, match=says):
        parse_pricing(value)


def test_usd_is_an_exact_string() -> None:
    assert usd(0) == "0.000000000"
    assert usd(123_450) == "0.000123450"
    assert usd(1_500_000_000) == "1.500000000"
