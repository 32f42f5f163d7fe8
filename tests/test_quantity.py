"""The product's one quantity parser agrees with the Kubernetes client's own (kubernetes.utils)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.utils import parse_quantity

from sdcluster.config.quantity import canonical_cpu, quantity_value

SUFFIXES = ["", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
numbers = st.one_of(
    st.integers(min_value=0, max_value=10**6).map(str),
    st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False).map(
        lambda d: format(d, "f")
    ),
)


@given(number=numbers, suffix=st.sampled_from(SUFFIXES))
def test_agrees_with_the_kubernetes_client_on_suffixed_quantities(number: str, suffix: str) -> None:
    assert quantity_value(number + suffix) == parse_quantity(number + suffix)


@given(number=st.integers(min_value=0, max_value=9999), exponent=st.integers(min_value=-3, max_value=9))
def test_agrees_on_decimal_exponents(number: int, exponent: int) -> None:
    text = f"{number}e{exponent}"
    assert quantity_value(text) == parse_quantity(text)


@pytest.mark.parametrize("bad", ["", "12Q", "1.2.3", "Gi", "0x10", "1ki"])
def test_both_reject_what_is_not_a_quantity(bad: str) -> None:
    with pytest.raises(ValueError):
        quantity_value(bad)
    with pytest.raises(ValueError):
        parse_quantity(bad)


def test_a_space_before_the_suffix_is_refused_as_the_api_server_does() -> None:
    # The Python client tolerates "1 Gi"; apimachinery's grammar (pkg/api/resource/quantity.go,
    # ParseQuantity) does not, and the API server is the one that answers the apply.
    assert parse_quantity("1 Gi") == 2**30
    with pytest.raises(ValueError):
        quantity_value("1 Gi")


@pytest.mark.parametrize(("cpu", "stored"), [("3", "3"), ("2.5", "2500m"), ("500m", "500m"), ("0.1", "100m")])
def test_canonical_cpu_is_the_value_the_api_server_keeps(cpu: str, stored: str) -> None:
    assert canonical_cpu(cpu) == stored
    assert parse_quantity(canonical_cpu(cpu)) == Decimal(parse_quantity(cpu))
