"""The operator commands' arguments and output: ``dlq list``, ``dlq redrive``, ``resend``,
``history``, ``suppression list|add|remove``. Tables for people, ``--json`` for scripts; one line
on standard error and a non-zero exit status when something fails (1: Kafka, 2: refused or bad
arguments, 3: not found).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from consumer.app.settings import Settings
    from consumer.tools.dlq import Selection
    from schemas import Codec

__all__ = ["add_commands", "printable", "run_command"]

COMMANDS = ("dlq", "resend", "history", "suppression")
# What a terminal would act on rather than show: C0 and C1 controls (ESC among them), DEL, bidi
# embeddings, overrides and isolates, line and paragraph separators. Records carry producers'
# bytes (an unvalidated dead letter's address, a key): every line printed is escaped.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def add_commands(commands: Any) -> None:
    """Adds the operator commands to ``ordermail``'s subparsers."""
    dlq = commands.add_parser("dlq", help="dead letters: list them, or redrive them to the input topic")
    actions = dlq.add_subparsers(dest="dlq_action", required=True)
    listing = actions.add_parser("list", help="dead letters with their reason, and a summary by reason")
    _selection_arguments(listing)
    _personal_argument(listing)
    _json_argument(listing)
    redrive = actions.add_parser("redrive", help="republish selected dead letters to the input topic, once")
    _selection_arguments(redrive)
    redrive.add_argument(
        "--dry-run", action="store_true", help="say what would be republished, publish nothing"
    )
    redrive.add_argument("--rate", type=_positive, metavar="N", help="at most N records per second")
    redrive.add_argument(
        "--force", action="store_true", help="also reasons a redrive cannot fix, and events it cannot decode"
    )
    redrive.add_argument(
        "--past-retention",
        action="store_true",
        help="also dead letters older than the outcomes and input records kept (unchecked: may mail twice)",
    )
    _json_argument(redrive)
    resend = commands.add_parser("resend", help="send an order's receipt once more, to the same address")
    resend.add_argument("order_id", metavar="ORDER_ID")
    resend.add_argument(
        "--wait", type=float, default=60.0, metavar="S", help="for its outcome (0: do not wait)"
    )
    _personal_argument(resend)
    _json_argument(resend)
    history = commands.add_parser("history", help="an order's outcomes in time order")
    history.add_argument("order_id", metavar="ORDER_ID")
    _json_argument(history)
    _suppression_commands(commands)


def _suppression_commands(commands: Any) -> None:
    from delivery.suppression import REASONS

    suppression = commands.add_parser(
        "suppression", help="the suppression list: addresses never e-mailed (keyed hashes, no addresses)"
    )
    actions = suppression.add_subparsers(dest="suppression_action", required=True)
    listing = actions.add_parser("list", help="entries: key prefix, reason, source, added, expires")
    listing.add_argument("--address", metavar="ADDRESS", help="only this address's entry (exit 3: none)")
    _json_argument(listing)
    add = actions.add_parser("add", help="suppress an address (source: operator)")
    add.add_argument("address", metavar="ADDRESS")
    add.add_argument("--reason", default="operator", choices=sorted(REASONS))
    add.add_argument("--expires-days", type=_days, metavar="N", help="stops suppressing after N days")
    _json_argument(add)
    remove = actions.add_parser("remove", help="write the address's tombstone (exit 3: not listed)")
    remove.add_argument("address", metavar="ADDRESS")
    _json_argument(remove)


def run_command(args: argparse.Namespace) -> int:
    from consumer.app.assembly import codec_for
    from consumer.app.settings import Settings
    from consumer.tools.scan import ToolError, check_personal_data_flag
    from schemas import SchemaRegistryUnavailable

    try:
        check_personal_data_flag(getattr(args, "show_personal_data", False))
        settings = Settings()
        result, lines = _execute(args, settings, codec_for(settings))
    except ToolError as error:
        print(printable(f"ordermail {args.command}: {error}"), file=sys.stderr)
        return error.code
    except SchemaRegistryUnavailable:  # nothing decided on what could not be read: run it again
        print(f"ordermail {args.command}: the schema registry does not answer; nothing done", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 — one line, no traceback: its text may quote a record
        print(f"ordermail {args.command}: failed ({type(exc).__name__})", file=sys.stderr)
        return 1
    # JSON escapes every control and non-ASCII character itself (ensure_ascii).
    print(json.dumps(result, indent=2, default=str) if args.json else "\n".join(map(printable, lines)))
    return 0


def printable(line: str) -> str:
    """The line with every character a terminal would act on written as an escape (``\\x1b``)."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), line)


def _execute(args: argparse.Namespace, settings: Settings, codec: Codec) -> tuple[dict[str, Any], list[str]]:
    from consumer.tools.dlq import list_dead_letters
    from consumer.tools.orders import history, resend
    from consumer.tools.redrive import redrive
    from consumer.tools.scan import Reader, ToolError
    from schemas.validation import is_order_id

    if args.command == "suppression":
        return _suppression(args, settings, codec)
    # Arguments first: nothing is read when they are wrong.
    selection = _selection(args) if args.command == "dlq" else None
    if args.command != "dlq" and not is_order_id(args.order_id):
        raise ToolError("not an order id (single line, at most 64 characters)", code=2)
    if selection is not None and args.dlq_action == "redrive":
        report = redrive(
            settings,
            codec,
            selection,
            dry_run=args.dry_run,
            rate=args.rate,
            force=args.force,
            past_retention=args.past_retention,
        )
        return report.as_dict(), _redrive_lines(report.as_dict())
    reader = Reader(settings)
    try:
        if selection is not None:
            listed = list_dead_letters(reader, codec, selection, personal=args.show_personal_data)
            return listed, _dlq_lines(listed)
        if args.command == "resend":
            sent = resend(reader, codec, args.order_id, wait_s=args.wait, personal=args.show_personal_data)
            return sent, _resend_lines(sent)
        found = history(reader, codec, args.order_id)
        return found, _history_lines(found)
    finally:
        reader.close()


def _suppression(
    args: argparse.Namespace, settings: Settings, codec: Codec
) -> tuple[dict[str, Any], list[str]]:
    from consumer.tools.scan import Reader
    from consumer.tools.suppression import add_suppression, address_key, list_suppressions, remove_suppression

    if args.address is not None:
        address_key(settings, args.address)  # refused before anything is read or written
    if args.suppression_action == "add":
        added = add_suppression(
            settings, codec, args.address, reason=args.reason, expires_days=args.expires_days
        )
        return added, [f"added to {added['topic']}:", *_suppression_lines([added])]
    reader = Reader(settings)
    try:
        if args.suppression_action == "remove":
            removed = remove_suppression(reader, codec, args.address)
            return removed, [f"removed {removed['key']} from {removed['topic']} (tombstone written)"]
        listed = list_suppressions(reader, codec, args.address)
    finally:
        reader.close()
    entries = "entry" if listed["total"] == 1 else "entries"
    summary = f"{listed['total']} {entries} in {listed['topic']}, {listed['suppressing']} suppressing"
    unreadable = f", {listed['unreadable']} unreadable records" if listed["unreadable"] else ""
    return listed, [*_suppression_lines(listed["entries"]), summary + unreadable]


def _suppression_lines(entries: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'key':<16}  {'reason':<12} {'source':<9} {'added':<25} {'expires':<25} suppressing"]
    for e in entries:
        lines.append(
            f"{e['key']:<16}  {e['reason']:<12} {e['source'] or '-':<9} {e['added']:<25} "
            f"{e['expires'] or 'never':<25} {'yes' if e['suppressing'] else 'no'}"
        )
    return lines


def _selection(args: argparse.Namespace) -> Selection:
    from consumer.tools.dlq import Selection, parse_time
    from consumer.tools.scan import ToolError

    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except (ValueError, OverflowError):  # OverflowError: 999999d ago is before the year 1
        raise ToolError(
            "--since/--until: a time such as 2026-12-07T05:00:00Z, or 90m, 2h, 7d ago", code=2
        ) from None
    return Selection(
        reasons=frozenset(args.reason) if args.reason else None,
        since_ms=since,
        until_ms=until,
        partitions=frozenset(args.partition) if args.partition else None,
        typed=(args.since, args.until),
    )


def _dlq_lines(listed: dict[str, Any]) -> list[str]:
    lines = [f"{'partition':>9} {'offset':>8}  {'time':<29} {'reason':<22} {'order id':<24} original"]
    for d in listed["dead_letters"]:
        original = f"{d['original_topic']} [{d['original_partition']}] @{d['original_offset']}"
        where = f"{d['partition']:>9} {d['offset']:>8}  {d['time']:<29}"
        email = f"  {d['email']}" if d.get("email") else ""
        lines.append(f"{where} {d['reason']:<22} {d['order_id']:<24} {original}{email}")
    summary = ", ".join(f"{reason} {n}" for reason, n in listed["summary"].items()) or "none"
    lines.append(f"{listed['total']} dead letters in {listed['topic']}: {summary}")
    return lines


def _redrive_lines(report: dict[str, Any]) -> list[str]:
    verb = "would republish" if report["dry_run"] else "republished"
    resumed = report["resumed_from"] or "the beginning"
    return [
        f"redrive {report['group']} (resumed from {resumed}): {report['selected']} selected, "
        f"{verb} {report['published']}, already sent {report['already_sent']}, "
        f"already redriven {report['already_redriven']}, duplicates {report['duplicates']}, "
        f"without record {report['without_record']}",
        *(f"  {reason}: {n}" for reason, n in report["reasons"].items()),
    ]


def _resend_lines(sent: dict[str, Any]) -> list[str]:
    found = sent["found_at"]
    lines = [
        f"order {sent['order_id']}: event {sent['event_id']} (from {found['topic']} [{found['partition']}]"
        f" @{found['offset']}) queued for resend {sent['resend']} to "
        + (sent["email"] if sent.get("email") else f"its address at {sent['recipient_domain']}")
    ]
    outcome = sent["outcome"]
    if outcome is None:
        lines.append("no final outcome yet: see `ordermail history` later")
    else:
        lines.append(
            f"outcome: {outcome['status']} {outcome['reason'] or ''} {outcome['message_id'] or ''}".rstrip()
        )
    if outcome is not None and outcome["reason"] == "suppressed":
        lines.append(
            "the address is on the suppression list: once the customer confirms it works, "
            "`ordermail suppression remove ADDRESS`, then resend"
        )
    return lines


def _history_lines(found: dict[str, Any]) -> list[str]:
    where = f"{found['topic']} [{found['partition']}]"
    lines = [f"order {found['order_id']}: {len(found['outcomes'])} outcomes in {where}"]
    for o in found["outcomes"]:
        sha = (o["attachment_sha256"] or "")[:16]
        lines.append(
            f"  {o['time']}  {o['status']:<8} {o['reason'] or '-':<20} attempt {o['attempt']}"
            f"  smtp {o['smtp_code'] or '-'}  sha256 {sha or '-'}  {o['message_id'] or '-'}"
        )
    if found["feedback"]:
        lines.append(f"after the relay: {len(found['feedback'])} reports")
    for f in found["feedback"]:
        bounce = f" {f['bounce_type']}" if f["bounce_type"] else ""
        lines.append(
            f"  {f['time']}  {f['kind']}{bounce:<6} {f['status_code'] or '-':<8} from {f['source']:<8}"
            f" attempt {f['attempt'] or '-'}  event {f['event_id']}"
        )
    return lines


def _selection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", action="append", metavar="REASON", help="repeatable")
    parser.add_argument(
        "--since", metavar="TIME", help="dead-lettered at or after: ISO time, or 90m/2h/7d ago"
    )
    parser.add_argument("--until", metavar="TIME", help="dead-lettered before")
    parser.add_argument(
        "--partition", type=int, action="append", metavar="P", help="of the dead-letter topic"
    )


def _personal_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--show-personal-data", action="store_true", help="show e-mail addresses (on a terminal only)"
    )


def _json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON document, for scripts")


def _days(text: str) -> float:
    value = _positive(text)
    if value > 36_500:  # beyond that a date overflows; a century is forever enough
        raise argparse.ArgumentTypeError("at most 36500 days")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:  # nan and inf would fail only after all the reading
        raise argparse.ArgumentTypeError("a positive number")
    return value
