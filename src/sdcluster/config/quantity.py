"""Kubernetes quantities ("3", "500m", "12Gi", "1e9"): the one parser of the product.

The grammar is apimachinery's ``resource.Quantity`` (pkg/api/resource/quantity.go); tests check this
parser against ``kubernetes.utils.parse_quantity`` (which would load the whole kubernetes client, too
heavy for configuration loading).

Example: ``quantity_value("512Mi")`` -> ``Decimal('536870912')``; ``canonical_cpu("2.5")`` -> ``'2500m'``.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

# The Kubernetes resource.Quantity grammar (apimachinery/pkg/api/resource/quantity.go):
# <signedNumber><suffix>, suffix = binarySI | decimalExponent | decimalSI.
QUANTITY_RE = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))((?:[KMGTPE]i)|[eE][+-]?[0-9]+|[mkMGTPE]?)")
_SUFFIX_SCALE = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate("kMGTPE")},
    **{s + "i": Decimal(1024) ** (i + 1) for i, s in enumerate("KMGTPE")},
}


def quantity_value(quantity: str) -> Decimal:
    """The numeric value of a Kubernetes quantity (ValueError if it is not one).

    Example: ``quantity_value("512Mi")`` -> ``Decimal('536870912')``; ``quantity_value("500m")`` -> ``0.5``.
    """
    match = QUANTITY_RE.fullmatch(quantity)
    if not match:
        raise ValueError(f"{json.dumps(quantity)} is not a Kubernetes quantity")
    number, suffix = match.groups()
    try:
        if suffix not in _SUFFIX_SCALE:  # a decimal exponent (E alone is exa, Ei is exbi)
            return Decimal(number) * Decimal(10) ** int(suffix[1:])
        return Decimal(number) * _SUFFIX_SCALE[suffix]
    except (ArithmeticError, ValueError) as e:  # decimal overflow; int() of a 5000-digit exponent
        raise ValueError(f"{json.dumps(quantity)} is out of range") from e


def canonical_cpu(cpu: str) -> str:
    """The form the API server stores a CPU quantity in ("2.5" -> "2500m"), so plans stay quiet."""
    if cpu.endswith("m"):
        return cpu
    value = Decimal(cpu)
    return str(int(value)) if value == value.to_integral_value() else f"{int(value * 1000)}m"
