"""Validate OCSF events (one JSON object a line) against the official compiled OCSF schema
of the version each event names in `metadata.version`, with validators nobody here wrote:
`ocsf-json-schema` turns the OCSF server's export it bundles into a self-contained JSON
Schema per class with the profiles the event lists in `metadata.profiles`, `jsonschema`
checks the event against it.

JSON Schema cannot say `type_uid = class_uid * 100 + activity_id`; that is checked here too.
Prints one line per problem, then `N events checked, M errors; classes: uid,uid,...`, and
exits 1 if any event is invalid."""
import json
import sys

import jsonschema
from ocsf_json_schema import OcsfJsonSchema, OcsfJsonSchemaEmbedded, get_ocsf_schema

events_path = sys.argv[1]
generators = {}
schemas = {}
bad = 0
total = 0
classes = set()
with open(events_path) as f:
    for n, line in enumerate(f, 1):
        total += 1
        event = json.loads(line)
        version = event.get("metadata", {}).get("version")
        if version not in generators:
            export = get_ocsf_schema(version)
            generators[version] = (export, OcsfJsonSchemaEmbedded(OcsfJsonSchema(export)))
        export, gen = generators[version]
        names = {c["uid"]: name for name, c in export["classes"].items()}
        uid = event.get("class_uid")
        if uid not in names:
            bad += 1
            print(f"line {n}: class_uid {uid!r} is not an OCSF {version} class")
            continue
        profiles = sorted(event.get("metadata", {}).get("profiles") or [])
        key = (version, uid, tuple(profiles))
        if key not in schemas:
            schema = gen.get_class_schema(names[uid], profiles)
            jsonschema.Draft202012Validator.check_schema(schema)
            schemas[key] = jsonschema.Draft202012Validator(schema)
        classes.add(uid)
        for e in sorted(schemas[key].iter_errors(event), key=lambda e: list(e.path)):
            bad += 1
            print(f"line {n}: {'/'.join(map(str, e.path)) or '<root>'}: {e.message}")
        activity = event.get("activity_id")
        if event.get("type_uid") != uid * 100 + (activity if isinstance(activity, int) else -10**6):
            bad += 1
            print(f"line {n}: type_uid {event.get('type_uid')} != class_uid {uid} * 100 + activity_id {activity}")
print(f"{total} events checked, {bad} errors; classes: {','.join(str(c) for c in sorted(classes))}")
sys.exit(1 if bad else 0)
