#!/usr/bin/env python3
"""A Modbus RTU server built on pymodbus (serial, with pyserial): the independent peer of
crates/agent/tests/it/modbus_rtu_interop.rs.

    pymodbus_rtu_server.py DEVICE SPEC.json

DEVICE is a serial port path; the test passes one end of a socat pseudo-terminal pair and
polls the other. SPEC.json is the format of pymodbus_server.py (the TCP peer), whose
encoder this script reuses, plus "units": the unit ids that answer (each with the same
tables and identity), 19200 baud 8N1 unless "baud" / "parity" (N, E, O) say otherwise.

Prints "READY <device>" on stdout once the port is open and runs until killed. Reads past
`size` get exception 02; requests for other unit ids get no answer, as on a real bus.
"""

import asyncio
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pymodbus import FramerType  # noqa: E402
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext  # noqa: E402
from pymodbus.pdu.device import ModbusDeviceIdentification  # noqa: E402
from pymodbus.server import ModbusSerialServer  # noqa: E402

from pymodbus_server import DeviceContext, build_tables  # noqa: E402


def device_context(tables):
    # A sequential block created at address 1 serves protocol address 0 from its first value.
    return DeviceContext(
        co=ModbusSequentialDataBlock(1, tables["coil"]),
        di=ModbusSequentialDataBlock(1, tables["discrete_input"]),
        hr=ModbusSequentialDataBlock(1, tables["holding_register"]),
        ir=ModbusSequentialDataBlock(1, tables["input_register"]),
    )


async def main(device, spec_path):
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    tables = build_tables(spec)
    devices = {unit: device_context(tables) for unit in spec["units"]}
    context = ModbusServerContext(devices=devices, single=False)
    ident = spec["identity"]
    identity = ModbusDeviceIdentification(
        info_name={
            "VendorName": ident["vendor"],
            "ProductCode": ident["product_code"],
            "MajorMinorRevision": ident["revision"],
        }
    )
    server = ModbusSerialServer(
        context,
        framer=FramerType.RTU,
        identity=identity,
        port=device,
        baudrate=spec.get("baud", 19200),
        parity=spec.get("parity", "N"),
        bytesize=8,
        stopbits=1,
    )
    await server.serve_forever(background=True)
    print(f"READY {device}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    asyncio.run(main(sys.argv[1], sys.argv[2]))
