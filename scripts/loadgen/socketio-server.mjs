// The chat server Switchboard is compared with: Socket.IO 4.8 on Node.js,
// nodes joined by the official Redis adapter (Redis pub/sub), written the
// way its documentation writes a private-message chat.
//
// Each client connects with `?client_id=<id>` and is put in the room of
// that name. A client emits `send` with `{to, body}` and an acknowledgement
// callback; the node answers the callback at once (as Switchboard acks
// every send) and emits `message` with `{from, body}` to the room of `to`,
// which the adapter carries to whichever node holds it. What Switchboard
// does besides (presence registry, offline answer, receipts, resume) has
// no counterpart here: the comparison is of the passing of a message.
//
//   node socketio-server.mjs --port 9001 --redis redis://127.0.0.1:6379
//
// Prints `listening <port>` once it takes connections.

import { createServer } from "node:http";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";
import { Server } from "socket.io";

function args() {
  const out = { port: 9001, redis: "redis://127.0.0.1:6379" };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!(key in out)) throw new Error(`unknown flag --${key}`);
    out[key] = typeof out[key] === "number" ? Number(argv[i + 1]) : argv[i + 1];
  }
  return out;
}

const opts = args();
const pub = createClient({ url: opts.redis });
const sub = pub.duplicate();
await Promise.all([pub.connect(), sub.connect()]);

const http = createServer();
// WebSocket only, and no per-message compression: as the generator
// connects, and as Switchboard serves.
const io = new Server(http, { transports: ["websocket"], perMessageDeflate: false });
io.adapter(createAdapter(pub, sub));

io.on("connection", (socket) => {
  const id = socket.handshake.query.client_id;
  if (typeof id !== "string" || id === "") {
    socket.disconnect(true);
    return;
  }
  socket.join(id);
  socket.on("send", (frame, ack) => {
    if (!frame || typeof frame.to !== "string") {
      if (typeof ack === "function") ack({ error: "bad_frame" });
      return;
    }
    io.to(frame.to).emit("message", { from: id, body: frame.body });
    if (typeof ack === "function") ack({ status: "sent" });
  });
});

http.listen(opts.port, "127.0.0.1", () => console.log(`listening ${opts.port}`));
