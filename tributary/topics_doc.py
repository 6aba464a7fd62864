"""docs/topics.md, written from the contracts themselves so it cannot drift from them.

`tributary schema` prints it; `tributary schema --out docs/topics.md` rewrites the file,
and a test fails when the file and the contracts disagree. For every topic: its default
name and the variable that renames it, its key, and each field of its message with type,
constraints and default, then an example message that passes the contract.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from models.contracts import (
    Contract,
    DeadLetter,
    DonorProfile,
    DonorRelationship,
    DonorSegmentUpdate,
    DriftReport,
    EventOutcome,
    FraudAlert,
    FraudLabel,
    GiftEvent,
    TransactionEvent,
    alert_id,
    decode,
    encode,
)
from stream.settings import TopicNames

AT_WIRE = "2026-03-02T09:30:00+00:00"
LATER_WIRE = "2026-03-02T09:30:00.042000+00:00"


@dataclass(frozen=True)
class Topic:
    setting: str  # the TopicNames field
    direction: str
    key: str
    contract: type[Contract]
    example: dict[str, Any]  # as a producer sends it; checked against the contract when rendered


TOPICS = (
    Topic("transactions", "input", "`source_account`", TransactionEvent, dict(
        event_id="tx-000123", event_time=AT_WIRE, source_account="acct-17", destination_account="acct-42",
        amount=250.0, currency="EUR", type="transfer", channel="mobile")),
    Topic("fraud_labels", "input", "`source_account` (as the transaction, so the label reaches the worker that "
          "scored it)", FraudLabel, dict(label_id="case-9", event_id="tx-000123", source_account="acct-17",
                                               kind="confirmed_fraud", labelled_at=AT_WIRE)),
    Topic("gifts", "input", "`donor_id`", GiftEvent, dict(
        event_id="gift-88", event_time=AT_WIRE, donor_id="donor-5", amount=50.0, channel="online", campaign="spring-26")),
    Topic("donor_profiles", "input", "`donor_id`", DonorProfile, dict(
        event_id="profile-5-3", event_time=AT_WIRE, donor_id="donor-5", tenure_years=4.5, age_band="45_54",
        email_open_rate_12m=0.31)),
    Topic("donor_relationships", "input", "`donor_id`", DonorRelationship, dict(
        event_id="rel-12", event_time=AT_WIRE, donor_id="donor-5", related_donor_id="donor-9",
        relationship_type="peer_fundraiser")),
    Topic("fraud_alerts", "output", "`source_account`", FraudAlert, dict(
        alert_id=alert_id("tx-000123", "fusion-gated", "20260301T120000000000Z"), event_id="tx-000123",
        event_time=AT_WIRE, source_account="acct-17", destination_account="acct-42", amount=250.0, score=0.93,
        threshold=0.61, model_name="fusion-gated", model_version="20260301T120000000000Z",
        reasons=[dict(kind="feature", name="amount_vs_source_mean", value=6.2, weight=0.41)],
        evidence=[dict(account="source", direction="in", counterparty="acct-99", amount=260.0,
                       event_time="2026-03-02T09:12:41Z", type="transfer", weight=0.83)],
        counterparties=[dict(account="acct-99", transactions=3, amount=610.0, weight=1.12)],
        scored_at=LATER_WIRE)),
    Topic("donor_segments", "output", "`donor_id`", DonorSegmentUpdate, dict(
        donor_id="donor-5", event_id="gift-88", event_time=AT_WIRE,
        probabilities={"high_engagement": 0.72, "network_influence": 0.12, "giving_consistency": 0.55,
                       "high_value": 0.08, "recent_engagement": 0.91},
        segments=["high_engagement", "giving_consistency", "recent_engagement"],
        previous_segments=["giving_consistency"], model_name="multitarget",
        model_version="20260301T120000000000Z", updated_at=LATER_WIRE)),
    Topic("outcomes", "output", "the event's id (`label_id` for a label)", EventOutcome, dict(
        event_id="tx-000123", topic="transactions", partition=2, offset=81234, outcome="scored",
        scores={"fraud": 0.93}, alert_id=alert_id("tx-000123", "fusion-gated", "20260301T120000000000Z"),
        model_name="fusion-gated", model_version="20260301T120000000000Z", processed_at=LATER_WIRE)),
    Topic("dead_letters", "output", "the input record's key (`sha256:<digest>` when that key was over 1 KiB)",
          DeadLetter, dict(
              topic="transactions", partition=1, offset=5520, key="YWNjdC0xNw==", key_bytes=7,
              original="eyJhbW91bnQiOiAtNX0=", original_bytes=15,
              original_sha256="4f1c6d4e3b7a2f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e",
              reason="schema_violation", error_class="InvalidEvent", field="amount",
              message="Input should be greater than 0", received_at=LATER_WIRE)),
    Topic("drift_reports", "output", "the monitor's name", DriftReport, dict(
        report_id="psi:amount:20260302T093000", monitor="psi:amount", kind="psi", statistic=0.27, threshold=0.2,
        model_name="fusion-gated", model_version="20260301T120000000000Z", window_events=5000,
        detected_at=LATER_WIRE, details={"reference": "validation deciles"})),
)


def topics_markdown() -> str:
    names = TopicNames()
    lines = [
        "# Topics and messages",
        "",
        "Generated from the contracts in `models/contracts` by `tributary schema --out docs/topics.md`;",
        "a test fails when this file and the contracts disagree. Every message is a JSON object",
        "(UTF-8) with `schema_version` 1; unknown fields are refused, times are ISO 8601 with an",
        "offset. An input that breaks its contract becomes a dead letter (`dead-letters`) and",
        "the worker goes on; every consumed input ends as one outcome or one dead letter.",
        "",
        "| topic (default name) | renamed by | direction | key | message |",
        "|---|---|---|---|---|",
    ]
    for topic in TOPICS:
        lines.append(f"| `{getattr(names, topic.setting)}` | `TRIBUTARY_TOPIC_{topic.setting.upper()}` | "
                     f"{topic.direction} | {topic.key} | [{topic.contract.__name__}](#{topic.contract.__name__.lower()}) |")
    for topic in TOPICS:
        lines += ["", f"## {topic.contract.__name__}", "",
                  f"Topic `{getattr(names, topic.setting)}` ({topic.direction}), keyed by {topic.key}. "
                  + _first_paragraph(topic.contract), "", *_field_table(topic.contract.model_json_schema()),
                  *_parts(topic.contract), "", "Example:", "", "```json", _example(topic), "```"]
    return "\n".join(lines) + "\n"


def _parts(contract: type[Contract]) -> list[str]:
    """A table for each object the message holds in a list (an alert's reasons, its evidence)."""
    lines: list[str] = []
    defs = contract.model_json_schema().get("$defs", {})
    for name, spec in defs.items():
        if spec.get("type") == "object" and "properties" in spec:
            description = " ".join(spec.get("description", "").split("\n\n")[0].split())
            lines += ["", f"{name}: {description}" if description else f"{name}:", "",
                      *_field_table({**spec, "$defs": defs})]
    return lines


def _example(topic: Topic) -> str:
    """The example as the contract has it on the wire (defaults filled in), or an error
    if it no longer passes: the docs cannot show a message the worker would refuse."""
    message = decode(json.dumps(topic.example).encode(), topic.contract)
    return json.dumps(json.loads(encode(message)), indent=2)


def _first_paragraph(contract: type[Contract]) -> str:
    doc = (contract.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split())


def _field_table(schema: dict[str, Any]) -> list[str]:
    required = set(schema.get("required", []))
    rows = ["| field | type | required | default |", "|---|---|---|---|"]
    for name, spec in schema["properties"].items():
        default = "" if name in required or "default" not in spec else f"`{json.dumps(spec['default'])}`"
        rows.append(f"| `{name}` | {_type(spec, schema.get('$defs', {}))} | {'yes' if name in required else 'no'} "
                    f"| {default} |")
    return rows


def _type(spec: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in spec:
        return _type(defs[spec["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in spec:
        kinds = [_type(option, defs) for option in spec["anyOf"] if option.get("type") != "null"]
        return " or ".join(kinds) + (" or null" if any(o.get("type") == "null" for o in spec["anyOf"]) else "")
    if "enum" in spec:
        return "one of " + ", ".join(f"`{v}`" for v in spec["enum"])
    if "const" in spec:
        return f"`{json.dumps(spec['const'])}`"
    kind = spec.get("type", "any")
    if kind == "string" and spec.get("format") == "date-time":
        return "time (ISO 8601 with offset)"
    if kind == "array":
        items = spec.get("items", {})
        item = items["$ref"].rsplit("/", 1)[-1] if "$ref" in items else _type(items, defs)
        return f"list of {item}" + (f" (at most {spec['maxItems']})" if "maxItems" in spec else "")
    if kind == "object":
        return "object"
    return kind + _constraints(spec)


def _constraints(spec: dict[str, Any]) -> str:
    parts = []
    for key, text in (("exclusiveMinimum", "> {}"), ("minimum", ">= {}"), ("exclusiveMaximum", "< {}"),
                      ("maximum", "<= {}"), ("minLength", "length >= {}"), ("maxLength", "length <= {}"),
                      ("pattern", "matching `{}`")):
        if key in spec:
            value = spec[key]
            parts.append(text.format(f"{value:g}" if isinstance(value, float) else value))
    return f" ({', '.join(parts)})" if parts else ""
