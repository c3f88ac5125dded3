// Serves the browser example and the package's bundle on loopback.
//
//   node examples/browser/serve.mjs [ws://127.0.0.1:8080] [port]
//
// The node must let this page's origin open sessions: start it with the
// --allowed-origins flag this prints.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const node = process.argv[2] ?? "ws://127.0.0.1:8080";
const port = Number(process.argv[3] ?? 5173);
const files = {
  "/": [path.join(here, "index.html"), "text/html; charset=utf-8"],
  "/app.mjs": [path.join(here, "app.mjs"), "text/javascript; charset=utf-8"],
  "/switchboard-client.min.js": [path.join(here, "../../dist/switchboard-client.min.js"), "text/javascript; charset=utf-8"],
};

const server = createServer(async (request, response) => {
  const file = files[new URL(request.url, "http://x").pathname];
  if (!file || request.method !== "GET") {
    response.writeHead(404).end("not found");
    return;
  }
  response.writeHead(200, { "content-type": file[1], "cache-control": "no-cache" });
  response.end(await readFile(file[0]));
});
server.listen(port, "127.0.0.1", () => {
  const origin = `http://127.0.0.1:${server.address().port}`;
  console.log(`open ${origin}/?node=${encodeURIComponent(node)}&me=alice`);
  console.log(`the node needs: --allowed-origins ${origin}`);
});
