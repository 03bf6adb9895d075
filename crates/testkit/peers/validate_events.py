"""Validate JSON-lines events against the repository's JSON Schema with the `jsonschema`
package (an implementation nobody here wrote). Prints one line per invalid event and exits 1
if any is invalid, 0 otherwise."""
import json
import sys

import jsonschema

schema_path, events_path = sys.argv[1], sys.argv[2]
with open(schema_path) as f:
    schema = json.load(f)
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
bad = 0
total = 0
with open(events_path) as f:
    for n, line in enumerate(f, 1):
        total += 1
        errors = sorted(validator.iter_errors(json.loads(line)), key=lambda e: list(e.path))
        for e in errors:
            bad += 1
            print(f"line {n}: {'/'.join(map(str, e.path)) or '<root>'}: {e.message}")
print(f"{total} events checked, {bad} errors")
sys.exit(1 if bad else 0)
