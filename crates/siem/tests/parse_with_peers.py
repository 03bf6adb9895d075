"""Parse the encoders' CEF lines and RFC 5424 messages with parsers nobody here wrote
(PyPI `pycef` and `syslog-rfc5424-parser`) and compare with what the test expects.

Input: one JSON object a line, {"kind": "cef" | "syslog", "line": ..., "expect": {...}}.
- cef: `expect` maps pycef's keys (header names such as DeviceEventClassID, extension keys,
  and the csN labels, which pycef applies) to values.
- syslog: `expect` has hostname, appname, procid, msgid, severity, facility, `sd` (params of
  the one SD element, unescaped) and `msg`.
pycef neither unescapes values nor understands escaped pipes in the header, so the test
feeds it only text without characters CEF escapes; the syslog parser returns PARAM-VALUEs
with their escapes, which this script removes (RFC 5424 6.3.3) before comparing.
Prints one line per mismatch, then `N messages checked, M errors`; exits 1 on any error."""
import json
import re
import sys

import pycef
from syslog_rfc5424_parser import SyslogMessage

bad = 0
total = 0
with open(sys.argv[1]) as f:
    for n, line in enumerate(f, 1):
        total += 1
        case = json.loads(line)
        try:
            if case["kind"] == "cef":
                got = pycef.parse(case["line"])
                if got is None:
                    raise ValueError("pycef found no CEF message")
                for k, v in case["expect"].items():
                    if got.get(k) != v:
                        bad += 1
                        print(f"line {n}: cef {k}: {got.get(k)!r} != {v!r}")
            else:
                got = SyslogMessage.parse(case["line"]).as_dict()
                exp = case["expect"]
                for k in ("hostname", "appname", "procid", "msgid", "severity", "facility", "msg"):
                    if got.get(k) != exp[k]:
                        bad += 1
                        print(f"line {n}: syslog {k}: {got.get(k)!r} != {exp[k]!r}")
                (sd_id, params), = got["sd"].items()
                params = {k: re.sub(r'\\(["\\\]])', r"\1", v) for k, v in params.items()}
                if params != exp["sd"]:
                    bad += 1
                    print(f"line {n}: syslog sd {sd_id}: {params!r} != {exp['sd']!r}")
        except Exception as e:  # a parser refusing the message is a failure to report
            bad += 1
            print(f"line {n}: {case['kind']}: {type(e).__name__}: {e}")
print(f"{total} messages checked, {bad} errors")
sys.exit(1 if bad else 0)
