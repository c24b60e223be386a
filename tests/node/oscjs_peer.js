// osc.js (from the npm registry) as an independent OSC peer for tests/test_interop_types.py.
//
//   node oscjs_peer.js listen udp|tcp COUNT
//       prints "listening PORT", then one JSON line per message received (a bundle's messages
//       each with the bundle's timetag), and exits after COUNT messages.
//   node oscjs_peer.js send udp|tcp PORT PACKETS_JSON
//       sends each packet of PACKETS_JSON to 127.0.0.1:PORT and exits once written.
//
// Values travel in one canonical form, so both sides compare like with like:
// i f d numbers; h a decimal string; s S c strings; t "xxxxxxxx.xxxxxxxx"; b m r hex; T F N as
// JSON true false null; I "inf"; an array a list. A packet is
// {"address": ..., "args": [{"type": TAG, "value": CANONICAL} or [...an array...]],
//  "timetag": null or "xxxxxxxx.xxxxxxxx" (then it is sent in a bundle)}.
"use strict";

const net = require("net");
const osc = require("osc");
const Long = require("long");

const hex8 = (n) => (n >>> 0).toString(16).padStart(8, "0");
const toHex = (bytes) => Buffer.from(bytes).toString("hex");
const fromHex = (text) => new Uint8Array(Buffer.from(text, "hex"));

function canonical(arg) {
    if (Array.isArray(arg)) {
        return arg.map(canonical);
    }
    const { type, value } = arg;
    switch (type) {
        case "h":
            return new Long(value.low, value.high).toString();
        case "t":
            return hex8(value.raw[0]) + "." + hex8(value.raw[1]);
        case "b":
        case "m":
            return toHex(value);
        case "r":
            return toHex([value.r, value.g, value.b, Math.round(value.a * 255)]);
        case "I":
            return "inf"; // osc.js reads infinitum as 1.0
        default:
            return value; // i f d s S c T F N
    }
}

function native(arg) {
    if (Array.isArray(arg)) {
        return arg.map(native);
    }
    const { type, value } = arg;
    switch (type) {
        case "h":
            return { type, value: Long.fromString(value) };
        case "t": {
            const [secs, frac] = value.split(".").map((part) => parseInt(part, 16));
            return { type, value: { raw: [secs, frac] } };
        }
        case "b":
        case "m":
            return { type, value: fromHex(value) };
        case "r": {
            const [r, g, b, a] = fromHex(value);
            return { type, value: { r, g, b, a: a / 255 } };
        }
        case "T":
        case "F":
        case "N":
        case "I":
            return { type };
        default:
            return { type, value };
    }
}

function typeTags(args) {
    return args.map((arg) => (Array.isArray(arg) ? "[" + typeTags(arg) + "]" : arg.type)).join("");
}

function packetOf(spec) {
    const message = { address: spec.address, args: spec.args.map(native) };
    if (spec.timetag === null || spec.timetag === undefined) {
        return message;
    }
    const [secs, frac] = spec.timetag.split(".").map((part) => parseInt(part, 16));
    return { timeTag: { raw: [secs, frac] }, packets: [message] };
}

function listen(transport, count) {
    let seen = 0;
    const onMessage = (message, timeTag) => {
        const line = {
            address: message.address,
            types: typeTags(message.args),
            args: message.args.map(canonical),
            timetag: timeTag ? hex8(timeTag.raw[0]) + "." + hex8(timeTag.raw[1]) : null,
        };
        process.stdout.write(JSON.stringify(line) + "\n");
        seen += 1;
        if (seen >= count) {
            process.exit(0);
        }
    };
    const onError = (err) => process.stderr.write("osc.js error: " + err + "\n");
    if (transport === "udp") {
        const port = new osc.UDPPort({ localAddress: "127.0.0.1", localPort: 0, metadata: true });
        port.on("ready", () => console.log("listening " + port.socket.address().port));
        port.on("message", onMessage);
        port.on("error", onError);
        port.open();
    } else {
        const server = net.createServer((socket) => {
            const port = new osc.TCPSocketPort({ socket, metadata: true });
            port.on("message", onMessage);
            port.on("error", onError);
        });
        server.listen(0, "127.0.0.1", () => console.log("listening " + server.address().port));
    }
}

function send(transport, portNumber, packets) {
    if (transport === "udp") {
        const encoded = packets.map((spec) => osc.writePacket(packetOf(spec), { metadata: true }));
        const port = new osc.UDPPort({ localAddress: "127.0.0.1", localPort: 0, metadata: true });
        port.on("ready", () => {
            let left = encoded.length;
            for (const data of encoded) {
                port.socket.send(Buffer.from(data), portNumber, "127.0.0.1", () => {
                    left -= 1;
                    if (left === 0) {
                        process.exit(0);
                    }
                });
            }
        });
        port.open();
    } else {
        const port = new osc.TCPSocketPort({ address: "127.0.0.1", port: portNumber, metadata: true });
        port.on("ready", () => {
            for (const spec of packets) {
                port.send(packetOf(spec)); // SLIP-framed, as osc.js always frames TCP
            }
            port.socket.end(() => process.exit(0));
        });
        port.on("error", (err) => {
            process.stderr.write("osc.js error: " + err + "\n");
            process.exit(1);
        });
        port.open();
    }
}

const [mode, transport, ...rest] = process.argv.slice(2);
if (mode === "listen") {
    listen(transport, Number(rest[0]));
} else if (mode === "send") {
    send(transport, Number(rest[0]), JSON.parse(rest[1]));
} else {
    process.stderr.write("usage: oscjs_peer.js listen udp|tcp COUNT | send udp|tcp PORT PACKETS\n");
    process.exit(2);
}
