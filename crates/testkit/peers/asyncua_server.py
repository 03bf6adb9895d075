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
server without telling the clients (a server that lost them); "stop [LINGER]" stops the
server in this process, taking LINGER seconds between closing the connections and closing
the listener (prints STOPPED); "start [new-certificate]" starts it again on the same port,
with a new key and certificate when asked (prints STARTED); "quit" ends the process.
Stopping in the process is how python-asyncua restarts a server: a connection accepted
while it stops stays open and served by the old instance (its values frozen) while a new
instance serves the port, as with devices that restart their server without a reboot.

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


class Peer:
    """The server and what the commands change: stopped and started again in this process
    (as a device that restarts its server without a reboot), optionally with a new
    certificate."""

    def __init__(self, port: int, pki: Path):
        self.port, self.pki = port, pki
        self.server = None
        self.nodes, self.tick = [], None
        self.stopping = []
        self.quit = asyncio.Event()

    async def start(self):
        key_path, cert_path = ensure_certificate(self.pki)
        server = Server(user_manager=Users())
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{self.port}/linesentry/")
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
        await server.start()
        self.server, self.nodes, self.tick = server, nodes, tick

    async def stop(self, linger: float = 0.0):
        server, self.server = self.server, None
        self.nodes, self.tick = [], None
        if server is None:
            return
        if linger > 0:
            # python-asyncua closes the open connections first and the listener last; a
            # shutdown that takes a while in between (a loaded machine) accepts clients
            # that reconnect at once, and leaves those connections open.
            close_tasks = server.bserver._close_tasks

            async def slow_close_tasks():
                await asyncio.sleep(linger)
                await close_tasks()

            server.bserver._close_tasks = slow_close_tasks
        # The listener is closed after the linger; python waits for accepted connections to
        # close before stop() returns, so a client that got in meanwhile keeps being served by
        # this stopped instance (with values nobody writes any more) while a new one may
        # start on the port. Such a stop is left running in the background.
        stopping = asyncio.create_task(server.stop())
        self.stopping.append(stopping)
        try:
            await asyncio.wait_for(asyncio.shield(stopping), linger + 2.0)
        except asyncio.TimeoutError:
            print("HOLDING a connection accepted while stopping", flush=True)

    async def commands(self):
        loop = asyncio.get_running_loop()
        while not self.quit.is_set():
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return  # stdin closed: keep serving until killed
            cmd = line.split()
            if cmd == ["drop-subscriptions"] and self.server is not None:
                service = self.server.iserver.subscription_service
                ids = list(service.subscriptions.keys())
                for i in ids:
                    sub = service.subscriptions.pop(i)
                    await sub.stop()
                print(f"DROPPED {len(ids)}", flush=True)
            elif cmd[:1] == ["stop"]:
                await self.stop(float(cmd[1]) if len(cmd) > 1 else 0.0)
                print("STOPPED", flush=True)
            elif cmd[:1] == ["start"]:
                if "new-certificate" in cmd[1:]:
                    for name in ("server_key.pem", "server_cert.der"):
                        (self.pki / name).unlink(missing_ok=True)
                await self.stop()
                await self.start()
                print("STARTED", flush=True)
            elif cmd == ["quit"]:
                self.quit.set()

    async def run(self):
        await self.start()
        print("READY", flush=True)
        asyncio.create_task(self.commands())
        n = 0
        while not self.quit.is_set():
            try:
                await asyncio.wait_for(self.quit.wait(), PERIOD)
            except asyncio.TimeoutError:
                pass
            n += 1
            if self.tick is None:
                continue
            for node, (_name, vt, a, b) in zip(self.nodes, VARIABLES):
                await node.write_value(ua.Variant(b if n % 2 else a, vt))
            await self.tick.write_value(ua.Variant(n, VT.UInt32))
        await self.stop()


async def main():
    await Peer(int(sys.argv[1]), Path(sys.argv[2])).run()


if __name__ == "__main__":
    asyncio.run(main())
