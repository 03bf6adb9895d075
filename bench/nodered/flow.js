// Writes the Node-RED flow of the baseline: one modbus-client and one modbus-read (FC 3,
// `registers` holding registers from address 0 every `interval` ms) per station address read
// from stdin (`ADDR host:port` lines, as `linesentry bench poll-serve` prints them), a function
// node counting responses and registers, a catch node counting errors, and GET /count serving
// the counters as JSON.
//
//     node flow.js REGISTERS INTERVAL_MS < addrs > flows.json
'use strict'
const registers = Number(process.argv[2])
const interval = Number(process.argv[3])
const addrs = require('fs').readFileSync(0, 'utf8').split('\n')
  .filter(l => l.startsWith('ADDR ')).map(l => l.slice(5).trim())
const tab = 'bench'
const flow = [{ id: tab, type: 'tab', label: 'linesentry bench poll baseline' }]
const count = {
  id: 'count', type: 'function', z: tab, name: 'count responses', outputs: 0, x: 600, y: 40,
  func: "global.set('responses', (global.get('responses') || 0) + 1);\n" +
        "global.set('registers', (global.get('registers') || 0) + (Array.isArray(msg.payload) ? msg.payload.length : 0));\n" +
        'return null;',
  wires: []
}
flow.push(count)
flow.push({ id: 'catch', type: 'catch', z: tab, name: '', scope: null, uncaught: false, x: 100, y: 20, wires: [['errors']] })
flow.push({
  id: 'errors', type: 'function', z: tab, name: 'count errors', outputs: 0, x: 300, y: 20,
  func: "global.set('errors', (global.get('errors') || 0) + 1);\nreturn null;", wires: []
})
flow.push({ id: 'http', type: 'http in', z: tab, name: '', url: '/count', method: 'get', upload: false, x: 100, y: 0, wires: [['report']] })
flow.push({
  id: 'report', type: 'function', z: tab, name: 'report', outputs: 1, x: 300, y: 0,
  func: "msg.payload = { responses: global.get('responses') || 0, registers: global.get('registers') || 0, errors: global.get('errors') || 0 };\nreturn msg;",
  wires: [['respond']]
})
flow.push({ id: 'respond', type: 'http response', z: tab, name: '', statusCode: '', headers: {}, x: 500, y: 0, wires: [] })
addrs.forEach((addr, i) => {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), addr.slice(addr.lastIndexOf(':') + 1)]
  flow.push({
    id: `client${i}`, type: 'modbus-client', name: `st-${i}`, clienttype: 'tcp', bufferCommands: true,
    stateLogEnabled: false, queueLogEnabled: false, failureLogEnabled: false, tcpHost: host, tcpPort: port,
    tcpType: 'DEFAULT', serialPort: '/dev/ttyUSB', serialType: 'RTU-BUFFERD', serialBaudrate: 9600,
    serialDatabits: 8, serialStopbits: 1, serialParity: 'none', serialConnectionDelay: 100,
    serialAsciiResponseStartDelimiter: '0x3A', unit_id: 1, commandDelay: 1, clientTimeout: 1000,
    reconnectOnTimeout: true, reconnectTimeout: 2000, parallelUnitIdsAllowed: true,
    showErrors: false, showWarnings: false, showLogs: false
  })
  flow.push({
    id: `read${i}`, type: 'modbus-read', z: tab, name: `read st-${i}`, topic: '', showStatusActivities: false,
    logIOActivities: false, showErrors: false, showWarnings: false, unitid: '1', dataType: 'HoldingRegister',
    adr: '0', quantity: String(registers), rate: String(interval), rateUnit: 'ms', delayOnStart: false,
    enableDeformedMessages: false, startDelayTime: '', server: `client${i}`, useIOFile: false, ioFile: '',
    useIOForPayload: false, emptyMsgOnFail: false, x: 300, y: 80 + 20 * i, wires: [['count'], []]
  })
})
process.stdout.write(JSON.stringify(flow, null, 1) + '\n')
