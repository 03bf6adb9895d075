#!/usr/bin/env python3
"""An independent OPC UA server (python-asyncua) for linesentry's interop tests.

Usage: asyncua_server.py PORT PKI_DIR

Listens on opc.tcp://127.0.0.1:PORT/linesentry/ with two endpoints: None and
Basic256Sha256 SignAndEncrypt. Its self-signed certificate (application URI
urn:linesentry:test:asyncua, SAN localhost and 127.0.0.1) is created once in PKI_DIR and
reused on restart. Identities: anonymous, and user "operator" with password "s3cret-op".

Variables in namespace 2 (urn:linesentry:test), string node ids:
  Demo.Bool Boolean, Demo.Int16 Int16, Demo.Int32 Int32, Demo.Int64 Int64,
  Demo.UInt16 UInt16, Demo.UInt32 UInt32, Demo.UInt64 UInt64, Demo.Float Float,
  Demo.Double Double, Demo.String String  -- alternate between value sets A and B
  every PERIOD seconds (A first);
  Demo.Tick UInt32 -- the number of switches so far;
  Demo.NaN Double -- always NaN.

Commands on stdin, one per line: "drop-subscriptions" deletes every subscription on the
server without telling the clients (a server that lost them); "quit" stops.

Prints READY once listening.
"""

import asyncio
import sys
from pathlib import Path

from asyncua import Server, ua
from asyncua.crypto.cert_gen import generate_private_key, dump_private_key_as_pem, generate_self_signed_app_certificate
from asyncua.crypto.permission_rules import User, UserRole
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.hazmat.primitives.serialization import Encoding
import ipaddress

PERIOD = 0.4
APP_URI = "urn:linesentry:test:asyncua"
USER, PASSWORD = "operator", "s3cret-op"

VT = ua.VariantType
# name, variant type, value A, value B
VARIABLES = [
    ("Bool", VT.Boolean, True, False),
    ("Int16", VT.Int16, -32768, 32767),
    ("Int32", VT.Int32, -2147483648, 2147483647),
    ("Int64", VT.Int64, -9223372036854775808, 9223372036854775807),
    ("UInt16", VT.UInt16, 65535, 0),
    ("UInt32", VT.UInt32, 4294967295, 7),
    ("UInt64", VT.UInt64, 18446744073709551615, 42),
    ("Float", VT.Float, 1.5, -0.125),
    ("Double", VT.Double, -2.25e300, 3.141592653589793),
    ("String", VT.String, "Grüße ✓", "PCB-0042"),
]


class Users:
    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username is None:
            return User(role=UserRole.User)
        if username == USER and password == PASSWORD:
            return User(role=UserRole.User, name=username)
        return None


def ensure_certificate(pki: Path, app_uri=APP_URI, name="linesentry asyncua test server"):
    """The server's key and self-signed certificate in PKI, made once and reused."""
    pki.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = pki / "server_key.pem", pki / "server_cert.der"
    if key_path.exists() and cert_path.exists():
        return key_path, cert_path
    key = generate_private_key()
    key_path.write_bytes(dump_private_key_as_pem(key))
    names = [
        x509.UniformResourceIdentifier(app_uri),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = generate_self_signed_app_certificate(
        key,
        name,
        {"organizationName": "linesentry tests"},
        names,
        extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        days=365,
    )
    cert_path.write_bytes(cert.public_bytes(encoding=Encoding.DER))
    return key_path, cert_path


async def commands(server, stop: asyncio.Event):
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return  # stdin closed: keep serving until killed
        cmd = line.strip()
        if cmd == "drop-subscriptions":
            service = server.iserver.subscription_service
            ids = list(service.subscriptions.keys())
            for i in ids:
                sub = service.subscriptions.pop(i)
                await sub.stop()
            print(f"DROPPED {len(ids)}", flush=True)
        elif cmd == "quit":
            stop.set()


async def main():
    port = int(sys.argv[1])
    pki = Path(sys.argv[2])
    key_path, cert_path = ensure_certificate(pki)

    server = Server(user_manager=Users())
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/linesentry/")
    server.set_server_name("linesentry asyncua test server")
    await server.set_application_uri(APP_URI)
    server.set_security_policy(
        [ua.SecurityPolicyType.NoSecurity, ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
    )
    server.set_identity_tokens([ua.AnonymousIdentityToken, ua.UserNameIdentityToken])
    await server.load_certificate(str(cert_path))
    await server.load_private_key(str(key_path))
    await server.set_build_info(
        product_uri="urn:linesentry:test:asyncua:product",
        manufacturer_name="linesentry tests",
        product_name="asyncua interop server",
        software_version="9.8.7",
        build_number="42",
        build_date=__import__("datetime").datetime(2024, 1, 2, 3, 4, 5),
    )

    idx = await server.register_namespace("urn:linesentry:test")
    folder = await server.nodes.objects.add_folder(ua.NodeId("Demo", idx), "Demo")
    nodes = []
    for name, vt, a, _b in VARIABLES:
        node = await folder.add_variable(ua.NodeId(f"Demo.{name}", idx), name, ua.Variant(a, vt))
        nodes.append(node)
    tick = await folder.add_variable(ua.NodeId("Demo.Tick", idx), "Tick", ua.Variant(0, VT.UInt32))
    await folder.add_variable(ua.NodeId("Demo.NaN", idx), "NaN", ua.Variant(float("nan"), VT.Double))

    stop = asyncio.Event()
    async with server:
        print("READY", flush=True)
        asyncio.create_task(commands(server, stop))
        n = 0
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), PERIOD)
            except asyncio.TimeoutError:
                pass
            n += 1
            for node, (_name, vt, a, b) in zip(nodes, VARIABLES):
                await node.write_value(ua.Variant(b if n % 2 else a, vt))
            await tick.write_value(ua.Variant(n, VT.UInt32))


if __name__ == "__main__":
    asyncio.run(main())
