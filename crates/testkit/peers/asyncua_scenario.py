#!/usr/bin/env python3
"""An independent OPC UA server (python-asyncua) that plays a timeline of value changes,
for linesentry's detection tests against a peer that is not the project's simulator.

Usage: asyncua_scenario.py PORT PKI_DIR SPEC_JSON

Listens on opc.tcp://127.0.0.1:PORT/scenario/ with a None and a Basic256Sha256
SignAndEncrypt endpoint; identities anonymous and user "operator" / "s3cret-op". Its
self-signed certificate (application URI urn:linesentry:test:scenario) is created in PKI_DIR
(server_cert.der, server_key.pem) before READY is printed, and reused on restart.

SPEC_JSON is a file:
  {
    "variables": [{"name": "Mode", "type": "Int32", "value": 1}, ...],
    "software_version": "1.0.0",
    "timeline": [
      {"at": 2.0, "set": {"Mode": 3, "PartId": "P-2"}},
      {"at": 5.0, "software_version": "2.0.0"}
    ]
  }
Each variable is node ns=2;s=Line.<name> of the given built-in type (Boolean, Int16, Int32,
UInt16, UInt32, Int64, Float, Double, String). "at" is seconds after the line "go" arrives on
stdin (so the client under test has learned its baseline first); the values of one step are
written together. A variable no step writes keeps its value for the whole run.
Prints READY once listening, then STEP <n> after each step, DONE after the last.
"""

import asyncio
import datetime
import json
import sys
import time
from pathlib import Path

from asyncua import Server, ua

# The interop server's certificate and users (same folder).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from asyncua_server import Users, ensure_certificate  # noqa: E402

APP_URI = "urn:linesentry:test:scenario"


async def set_version(server, version):
    await server.set_build_info(
        product_uri="urn:linesentry:test:scenario:product",
        manufacturer_name="linesentry tests",
        product_name="asyncua scenario server",
        software_version=version,
        build_number="1",
        build_date=datetime.datetime(2024, 1, 2, 3, 4, 5),
    )


async def main():
    port, pki, spec_path = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    spec = json.loads(spec_path.read_text())
    key_path, cert_path = ensure_certificate(pki, APP_URI, "linesentry asyncua scenario server")

    server = Server(user_manager=Users())
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/scenario/")
    server.set_server_name("linesentry asyncua scenario server")
    await server.set_application_uri(APP_URI)
    server.set_security_policy(
        [ua.SecurityPolicyType.NoSecurity, ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
    )
    server.set_identity_tokens([ua.AnonymousIdentityToken, ua.UserNameIdentityToken])
    await server.load_certificate(str(cert_path))
    await server.load_private_key(str(key_path))
    await set_version(server, spec.get("software_version", "1.0.0"))

    idx = await server.register_namespace("urn:linesentry:test")
    folder = await server.nodes.objects.add_folder(ua.NodeId("Line", idx), "Line")
    nodes = {}
    for var in spec["variables"]:
        vt = getattr(ua.VariantType, var["type"])
        node = await folder.add_variable(
            ua.NodeId(f"Line.{var['name']}", idx), var["name"], ua.Variant(var["value"], vt)
        )
        nodes[var["name"]] = (node, vt)

    async with server:
        print("READY", flush=True)
        loop = asyncio.get_running_loop()
        while (await loop.run_in_executor(None, sys.stdin.readline)).strip() != "go":
            pass
        start = time.monotonic()
        for n, step in enumerate(spec.get("timeline", [])):
            delay = step["at"] - (time.monotonic() - start)
            if delay > 0:
                await asyncio.sleep(delay)
            for name, value in step.get("set", {}).items():
                node, vt = nodes[name]
                await node.write_value(ua.Variant(value, vt))
            if "software_version" in step:
                await set_version(server, step["software_version"])
            print(f"STEP {n}", flush=True)
        print("DONE", flush=True)
        while True:
            await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main())
