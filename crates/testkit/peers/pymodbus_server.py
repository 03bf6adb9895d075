#!/usr/bin/env python3
"""A Modbus TCP server built on pymodbus: the independent peer of crates/agent/tests/it/modbus_interop.rs.

    pymodbus_server.py PORT SPEC.json

SPEC.json describes the data the test expects to read back:

    {
      "size": 400,                              # addresses per table, all zero unless set
      "identity": {"vendor": "...", "product_code": "...", "revision": "..."},
      "points": [
        {"table": "holding_register", "address": 10, "type": "f32", "order": "CDAB",
         "value": 1.5},
        {"table": "coil", "address": 3, "type": "bool", "value": true},
        {"table": "holding_register", "address": 40, "type": "bool", "bit": 3, "value": true},
        {"table": "input_register", "address": 60, "type": "string", "length": 4,
         "value": "AB-12"},
        ...
      ],
      "diagnostics": {"BusMessage": 4660, "Event": 321, ...},  # optional
      "count": true                             # optional, see below
    }

Addresses are zero-based protocol addresses. Every value is encoded here, by pymodbus's own
converter (ModbusClientMixin.convert_to_registers, which knows big and little word order)
and Python's struct module, never by the Rust code under test:

    ABCD  pymodbus, word_order="big"
    CDAB  pymodbus, word_order="little"
    BADC  pymodbus big word order, then the two bytes of every register swapped
    DCBA  struct.pack("<", ...): the value's bytes fully little-endian

The server listens on 127.0.0.1:PORT, answers FC 1/2/3/4 from the tables and FC 43/14 with
the given identity, FC 08 (diagnostics) and FC 11 (comm event counter) from pymodbus's
control block, whose counters "diagnostics" presets by their pymodbus names (pymodbus's TCP
server does not count what it serves itself; FC 08 sub-function 0x0A clears them), prints "READY <port>" on stdout once it listens and runs until killed.
Reads past `size` get exception 02 (illegal data address).

With "count": true the server counts what it serves, from every client, as a device does
(pymodbus's TCP server does not): each request received adds one to BusMessage and
DeviceMessage; each exception response sent to BusExceptionError; each normal response
to Event (the FC 11 comm event count), FC 11 itself excluded. A request is counted when it
arrives, so a read of a counter includes the request that reads it.
"""

import asyncio
import json
import logging
import struct
import sys

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.pdu.device import ModbusControlBlock, ModbusDeviceIdentification
from pymodbus.server import ModbusTcpServer

try:  # pymodbus >= 3.10
    from pymodbus.datastore import ModbusDeviceContext as DeviceContext
except ImportError:  # older 3.x
    from pymodbus.datastore import ModbusSlaveContext as DeviceContext
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext

DT = ModbusClientMixin.DATATYPE
TYPES = {
    "u16": (DT.UINT16, "H"),
    "i16": (DT.INT16, "h"),
    "u32": (DT.UINT32, "I"),
    "i32": (DT.INT32, "i"),
    "u64": (DT.UINT64, "Q"),
    "i64": (DT.INT64, "q"),
    "f32": (DT.FLOAT32, "f"),
    "f64": (DT.FLOAT64, "d"),
}


def swap_bytes(regs):
    return [((r & 0xFF) << 8) | (r >> 8) for r in regs]


def encode(point):
    """The registers holding a point's value."""
    kind = point["type"]
    value = point["value"]
    if kind == "string":
        regs = ModbusClientMixin.convert_to_registers(value, DT.STRING)
        return regs + [0] * (point["length"] - len(regs))
    datatype, fmt = TYPES[kind]
    order = point.get("order", "ABCD")
    if order == "ABCD" or datatype.value[1] == 1:
        return ModbusClientMixin.convert_to_registers(value, datatype, word_order="big")
    if order == "CDAB":
        return ModbusClientMixin.convert_to_registers(value, datatype, word_order="little")
    if order == "BADC":
        return swap_bytes(ModbusClientMixin.convert_to_registers(value, datatype, word_order="big"))
    if order == "DCBA":
        raw = struct.pack("<" + fmt, value)
        return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    raise ValueError(f"unknown order {order}")


def build_tables(spec):
    size = spec["size"]
    tables = {
        "coil": [False] * size,
        "discrete_input": [False] * size,
        "holding_register": [0] * size,
        "input_register": [0] * size,
    }
    for point in spec["points"]:
        table = tables[point["table"]]
        address = point["address"]
        if point["table"] in ("coil", "discrete_input"):
            table[address] = bool(point["value"])
        elif point["type"] == "bool":
            mask = 1 << point["bit"]
            table[address] = (table[address] | mask) if point["value"] else (table[address] & ~mask)
        else:
            regs = encode(point)
            table[address : address + len(regs)] = regs
    return tables


def counting(counters):
    """A trace_pdu hook that keeps the device's diagnostic counters (see the docstring)."""

    def trace(sending, pdu):
        if not sending:
            counters.BusMessage = (counters.BusMessage + 1) & 0xFFFF
            counters.DeviceMessage = (counters.DeviceMessage + 1) & 0xFFFF
        elif pdu.function_code & 0x80:
            counters.BusExceptionError = (counters.BusExceptionError + 1) & 0xFFFF
        elif pdu.function_code != 0x0B:
            counters.Event = (counters.Event + 1) & 0xFFFF
        return pdu

    return trace


async def main(port, spec_path):
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    tables = build_tables(spec)
    # A sequential block created at address 1 serves protocol address 0 from its first value.
    device = DeviceContext(
        co=ModbusSequentialDataBlock(1, tables["coil"]),
        di=ModbusSequentialDataBlock(1, tables["discrete_input"]),
        hr=ModbusSequentialDataBlock(1, tables["holding_register"]),
        ir=ModbusSequentialDataBlock(1, tables["input_register"]),
    )
    context = ModbusServerContext(devices=device, single=True)
    ident = spec["identity"]
    identity = ModbusDeviceIdentification(
        info_name={
            "VendorName": ident["vendor"],
            "ProductCode": ident["product_code"],
            "MajorMinorRevision": ident["revision"],
        }
    )
    counters = ModbusControlBlock().Counter
    for name, value in spec.get("diagnostics", {}).items():
        setattr(counters, name, value)
    trace = counting(counters) if spec.get("count") else None
    server = ModbusTcpServer(
        context, identity=identity, address=("127.0.0.1", port), trace_pdu=trace
    )
    await server.serve_forever(background=True)
    print(f"READY {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
