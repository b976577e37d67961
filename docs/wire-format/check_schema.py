#!/usr/bin/env python3
"""Checks docs/wire-format/schema.json against the example and invalid messages.

- Every examples/*.json must be valid under the schema.
- Every invalid/*.json that parses as a JSON object must fail the schema,
  unless it is listed in READER_ONLY: messages the Rust decoder rejects for a
  reason JSON Schema cannot express. Listed files must exist and must pass the
  schema (otherwise the entry is stale).

The Rust side (crates/invalog/src/wire/tests.rs) checks that every example decodes and every
invalid message fails with the expected error. Exit status 1 on any mismatch.

Usage: pip install jsonschema && python3 docs/wire-format/check_schema.py
"""

import json
import sys
from pathlib import Path

from jsonschema import Draft202012Validator

HERE = Path(__file__).resolve().parent

# Invalid messages that satisfy the schema; the reason the Rust decoder
# rejects each one.
READER_ONLY = {
    "duplicate-field.json": "a key appears twice in one object; JSON Schema sees only the last value",
    "format-float.json": "format is 1.0: JSON Schema compares numbers by value (1.0 == 1), the reader wants the integer 1",
    "ids-integral-floats.json": "1051.0 is an integer for JSON Schema, a float for the reader",
    "ids-negative-zero.json": "-0 is the integer 0 for JSON Schema, a float for the reader",
    "lone-surrogate.json": "an escaped lone UTF-16 surrogate (\\ud800) is not a Unicode string; JSON Schema does not check",
    "published-at-bad-date.json": "February 30th has the right shape but is not a date",
    "too-deeply-nested.json": "nesting deeper than the reader's 127 levels; JSON Schema has no depth limit",
}


def reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def load_json(path):
    """Parses a file as strictly as the Rust reader does at the byte level:
    UTF-8 without a BOM, no NaN or Infinity. Returns (ok, value)."""
    try:
        text = path.read_bytes().decode("utf-8")
        return True, json.loads(text, parse_constant=reject_constant)
    except (UnicodeDecodeError, ValueError):
        return False, None


def main():
    schema = json.loads((HERE / "schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    problems = []

    examples = sorted((HERE / "examples").glob("*.json"))
    if len(examples) < 9:
        problems.append(f"examples/: only {len(examples)} files, expected at least 9")
    for path in examples:
        ok, message = load_json(path)
        if not ok:
            problems.append(f"examples/{path.name}: not JSON")
            continue
        for error in validator.iter_errors(message):
            where = "/".join(str(p) for p in error.absolute_path) or "(top)"
            problems.append(f"examples/{path.name}: {where}: {error.message}")

    invalid = sorted(p for p in (HERE / "invalid").iterdir() if p.suffix in (".json", ".bin"))
    checked = 0
    for path in invalid:
        if path.suffix != ".json":
            continue
        ok, message = load_json(path)
        if not ok or not isinstance(message, dict):
            continue  # not a JSON object: the reader rejects it before any schema applies
        checked += 1
        schema_valid = validator.is_valid(message)
        if path.name in READER_ONLY:
            if not schema_valid:
                problems.append(
                    f"invalid/{path.name}: listed in READER_ONLY but the schema rejects it; remove the entry"
                )
        elif schema_valid:
            problems.append(
                f"invalid/{path.name}: passes the schema; tighten the schema or list it in READER_ONLY with the reason"
            )
    names = {p.name for p in invalid}
    for name in READER_ONLY:
        if name not in names:
            problems.append(f"READER_ONLY names invalid/{name}, which does not exist")

    for problem in problems:
        print(problem, file=sys.stderr)
    print(
        f"{len(examples)} examples, {checked} invalid JSON objects checked "
        f"({len(READER_ONLY)} rejected by the reader only): "
        + ("FAIL" if problems else "ok")
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
