"""The PDF password policy: derivation from the order by a sandboxed template, and its checks."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import pytest

from rendering import DEFAULT_PASSWORD_TEMPLATE, PasswordPolicy, RenderError
from rendering.password import ALLOWED_PASSWORD_CHARACTERS
from schemas.samples import sample_order

if TYPE_CHECKING:
    from schemas.model import OrderCompleted


def order_with(
    postal_code: str = "28014", order_id: str = "ORD-202611001-AB12", **changes: Any
) -> OrderCompleted:
    order = copy.deepcopy(sample_order(1))
    order["customer"]["billing_address"]["postal_code"] = postal_code
    order["order_id"] = order_id
    order.update(changes)  # type: ignore[typeddict-item]
    return order


def test_default_template_is_postal_code_hyphen_last_four_of_order_id() -> None:
    assert PasswordPolicy().password_for(order_with()) == "28014-AB12"


@pytest.mark.parametrize("postal_code", ["NW1 6XE", "K1A 0B1", "1000", "08013", "100-0001"])
def test_default_accepts_real_world_postal_codes(postal_code: str) -> None:
    password = PasswordPolicy().password_for(order_with(postal_code=postal_code))
    assert password == f"{postal_code}-AB12"


@pytest.mark.parametrize("seed", range(30))
def test_default_policy_accepts_every_sample_order(seed: int) -> None:
    order = sample_order(seed)
    password = PasswordPolicy().password_for(order)
    assert password.startswith(order["customer"]["billing_address"]["postal_code"])
    assert password.endswith(order["order_id"][-4:])


def test_surrounding_whitespace_is_stripped() -> None:
    policy = PasswordPolicy("  {{ order_id }}\n")
    assert policy.password_for(order_with(order_id="ORD-0001")) == "ORD-0001"


def test_custom_template_sees_the_orders_fields() -> None:
    policy = PasswordPolicy("{{ customer.customer_id }}.{{ currency }}")
    order = order_with()
    assert policy.password_for(order) == f"{order['customer']['customer_id']}.{order['currency']}"


@pytest.mark.parametrize(
    ("postal_code", "order_id"),
    [
        ("", "A"),  # "-A"
        ("1", "12"),  # "1-12"
        ("123", "1"),  # "123-1": 5 < 8
    ],
)
def test_too_short_is_weak(postal_code: str, order_id: str) -> None:
    with pytest.raises(RenderError) as caught:
        PasswordPolicy().password_for(order_with(postal_code=postal_code, order_id=order_id))
    assert caught.value.reason == "weak_password"


@pytest.mark.parametrize("template", ["", "   ", "{{ '' }}", "{% if false %}x{% endif %}"])
def test_empty_is_weak(template: str) -> None:
    with pytest.raises(RenderError) as caught:
        PasswordPolicy(template).password_for(order_with())
    assert caught.value.reason == "weak_password"


def test_min_length_is_configurable() -> None:
    order = order_with(postal_code="28014", order_id="ORD-AB12")
    assert PasswordPolicy(min_length=10).password_for(order) == "28014-AB12"
    with pytest.raises(RenderError) as caught:
        PasswordPolicy(min_length=11).password_for(order)
    assert caught.value.reason == "weak_password"


def test_over_127_characters_is_rejected() -> None:
    with pytest.raises(RenderError) as caught:
        PasswordPolicy("{{ 'a' * 128 }}").password_for(order_with())
    assert caught.value.reason == "weak_password"
    assert PasswordPolicy("{{ 'a' * 127 }}").password_for(order_with()) == "a" * 127


@pytest.mark.parametrize(
    "postal_code", ["28014/7", "2801ñ", "28014€", "280\t14", "28014!", "2801'4", "28014\u00a0"]
)
def test_characters_outside_the_set_are_weak_and_never_echoed(postal_code: str) -> None:
    with pytest.raises(RenderError) as caught:
        PasswordPolicy().password_for(order_with(postal_code=postal_code + "99"))
    assert caught.value.reason == "weak_password"
    assert postal_code not in str(caught.value)
    assert "AB12" not in str(caught.value)


def test_allowed_set_is_exactly_the_documented_one() -> None:
    expected = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 -_.")
    assert set(ALLOWED_PASSWORD_CHARACTERS) == expected


def test_syntax_error_is_a_template_error_at_construction() -> None:
    with pytest.raises(RenderError) as caught:
        PasswordPolicy("{{ order_id ")
    assert caught.value.reason == "template_error"


@pytest.mark.parametrize(
    "template",
    [
        "{{ no_such_field }}-12345678",
        "{{ shipping_address.postal_code }}-12345678",  # None has no postal code
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",  # the sandbox refuses
        "{{ customer.__init__.__globals__ }}",
    ],
)
def test_failing_or_unsafe_template_is_a_template_error(template: str) -> None:
    with pytest.raises(RenderError) as caught:
        PasswordPolicy(template).password_for(order_with(shipping_address=None))
    assert caught.value.reason == "template_error"


def test_event_values_are_data_not_template_code() -> None:
    # A postal code that looks like template code is rendered literally, then rejected by the policy.
    with pytest.raises(RenderError) as caught:
        PasswordPolicy().password_for(order_with(postal_code="{{ 7*7 }}"))
    assert caught.value.reason == "weak_password"
    assert PasswordPolicy().password_for(order_with(postal_code="7 7 7 7")) == "7 7 7 7-AB12"


def test_is_default_reflects_the_template() -> None:
    assert PasswordPolicy().is_default
    assert PasswordPolicy(DEFAULT_PASSWORD_TEMPLATE).is_default
    assert not PasswordPolicy("{{ order_id }}").is_default


@pytest.mark.parametrize("min_length", [0, -1, 128])
def test_min_length_outside_bounds_is_a_programming_error(min_length: int) -> None:
    with pytest.raises(ValueError, match="min_length"):
        PasswordPolicy(min_length=min_length)
