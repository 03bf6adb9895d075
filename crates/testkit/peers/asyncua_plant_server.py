#!/usr/bin/env python3
"""An OPC UA server (python-asyncua) with a plant-like address space, the independent peer of
`linesentry discover opcua` and `linesentry probe` (tests/it/onboard.rs).

Usage: asyncua_plant_server.py PORT PKI_DIR [BULK]

Listens on opc.tcp://127.0.0.1:PORT/plant/ with two endpoints: None and Basic256Sha256
SignAndEncrypt (the certificate is made once in PKI_DIR as asyncua_server.py makes it:
PKI_DIR/server_cert.der). Anonymous identity. Prints "READY NS" once listening, NS being the
index of its namespace, then serves until killed.

Address space, namespace NS (urn:linesentry:test:plant), string node ids, fixed values:

  Objects/Plant (folder)
    Line1 (folder)
      Oven (object)
        Zone1 (object)
          Temperature   Double  187.5  EURange 0..300, EngineeringUnits "°C"
          Setpoint      Float   190.0  EURange 25..250, EngineeringUnits "°C"
          <Organizes reference back to Line1: a cycle>
        OperatingMode   Int32   1      EnumStrings Manual, Auto, Maintenance
        State           UInt16  3
        BoardCounter    UInt32  123456
        TotalEnergy     Int64   -42    (EngineeringUnits "kWh")
        Firmware        String  "4.2.1"
        DoorClosed      Boolean true
        OverTempAlarmEnable Boolean true
        Offset          Int16   -7
        ZoneProfile     Double[] (an array: not a tag)
        Reset()         a method: never a tag
        Nameplate       an object whose only children are properties: no tags
  Objects/Plant/Bulk (folder, only with BULK > 0)
    Group000 .. GroupNNN (folders of 100)
      Value00000 ..  Double, value = its number; BULK variables in all

Node ids: "Plant.Line1.Oven.Zone1.Temperature" and so on (the path with dots);
bulk: "Bulk.Value00042".
"""

import asyncio
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from asyncua_server import ensure_certificate  # noqa: E402

from asyncua import Server, ua, uamethod  # noqa: E402

APP_URI = "urn:linesentry:test:plant"
NS = "urn:linesentry:test:plant"
VT = ua.VariantType


@uamethod
def reset(parent):
    return None


async def analog(parent, idx, node_id, name, value, vt, low=None, high=None, unit=None):
    var = await parent.add_variable(ua.NodeId(node_id, idx), name, ua.Variant(value, vt))
    if low is not None:
        await var.add_property(
            ua.NodeId(node_id + ".EURange", idx),
            ua.QualifiedName("EURange", 0),
            ua.Variant(ua.Range(Low=low, High=high), VT.ExtensionObject),
        )
    if unit is not None:
        eu = ua.EUInformation(
            NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
            UnitId=-1,
            DisplayName=ua.LocalizedText(unit),
            Description=ua.LocalizedText(unit),
        )
        await var.add_property(
            ua.NodeId(node_id + ".EngineeringUnits", idx),
            ua.QualifiedName("EngineeringUnits", 0),
            ua.Variant(eu, VT.ExtensionObject),
        )
    return var


async def main():
    port = int(sys.argv[1])
    pki = Path(sys.argv[2])
    bulk = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    key_path, cert_path = ensure_certificate(pki, APP_URI, "linesentry plant test server")

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/plant/")
    server.set_server_name("linesentry plant test server")
    await server.set_application_uri(APP_URI)
    server.set_security_policy(
        [ua.SecurityPolicyType.NoSecurity, ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt]
    )
    server.set_identity_tokens([ua.AnonymousIdentityToken])
    await server.load_certificate(str(cert_path))
    await server.load_private_key(str(key_path))

    idx = await server.register_namespace(NS)
    objects = server.nodes.objects
    plant = await objects.add_folder(ua.NodeId("Plant", idx), "Plant")
    line1 = await plant.add_folder(ua.NodeId("Plant.Line1", idx), "Line1")
    oven = await line1.add_object(ua.NodeId("Plant.Line1.Oven", idx), "Oven")
    zone1 = await oven.add_object(ua.NodeId("Plant.Line1.Oven.Zone1", idx), "Zone1")
    base = "Plant.Line1.Oven."
    await analog(zone1, idx, base + "Zone1.Temperature", "Temperature", 187.5, VT.Double, 0.0, 300.0, "°C")
    await analog(zone1, idx, base + "Zone1.Setpoint", "Setpoint", 190.0, VT.Float, 25.0, 250.0, "°C")
    # A cycle: Zone1 organizes Line1, which (through Oven) holds Zone1.
    await zone1.add_reference(line1.nodeid, ua.ObjectIds.Organizes)

    mode = await oven.add_variable(ua.NodeId(base + "OperatingMode", idx), "OperatingMode", ua.Variant(1, VT.Int32))
    await mode.add_property(
        ua.NodeId(base + "OperatingMode.EnumStrings", idx),
        ua.QualifiedName("EnumStrings", 0),
        ua.Variant([ua.LocalizedText("Manual"), ua.LocalizedText("Auto"), ua.LocalizedText("Maintenance")], VT.LocalizedText),
    )
    await oven.add_variable(ua.NodeId(base + "State", idx), "State", ua.Variant(3, VT.UInt16))
    await oven.add_variable(ua.NodeId(base + "BoardCounter", idx), "BoardCounter", ua.Variant(123456, VT.UInt32))
    await analog(oven, idx, base + "TotalEnergy", "TotalEnergy", -42, VT.Int64, unit="kWh")
    await oven.add_variable(ua.NodeId(base + "Firmware", idx), "Firmware", ua.Variant("4.2.1", VT.String))
    await oven.add_variable(ua.NodeId(base + "DoorClosed", idx), "DoorClosed", ua.Variant(True, VT.Boolean))
    await oven.add_variable(
        ua.NodeId(base + "OverTempAlarmEnable", idx), "OverTempAlarmEnable", ua.Variant(True, VT.Boolean)
    )
    await oven.add_variable(ua.NodeId(base + "Offset", idx), "Offset", ua.Variant(-7, VT.Int16))
    await oven.add_variable(
        ua.NodeId(base + "ZoneProfile", idx), "ZoneProfile", ua.Variant([150.0, 180.0, 240.0], VT.Double)
    )
    await oven.add_method(ua.NodeId(base + "Reset", idx), "Reset", reset, [], [])
    plate = await oven.add_object(ua.NodeId(base + "Nameplate", idx), "Nameplate")
    await plate.add_property(ua.NodeId(base + "Nameplate.Vendor", idx), "Vendor", "linesentry tests")
    await plate.add_property(ua.NodeId(base + "Nameplate.Serial", idx), "SerialNumber", "SN-0001")

    if bulk > 0:
        folder = await plant.add_folder(ua.NodeId("Bulk", idx), "Bulk")
        group = None
        for i in range(bulk):
            if i % 100 == 0:
                group = await folder.add_folder(ua.NodeId(f"Bulk.Group{i // 100:03d}", idx), f"Group{i // 100:03d}")
            await group.add_variable(ua.NodeId(f"Bulk.Value{i:05d}", idx), f"Value{i:05d}", ua.Variant(float(i), VT.Double))

    async with server:
        print(f"READY {idx}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    asyncio.run(main())
