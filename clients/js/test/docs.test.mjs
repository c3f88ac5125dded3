// The docs stay honest: every ```ts block of README.md and API.md is
// type-checked against the package's own sources, as a user's file
// importing "switchboard-client" would be.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

function blocks(file) {
  const text = readFileSync(path.join(root, file), "utf8");
  return [...text.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
}

test("the examples in README.md and API.md compile", { timeout: 60_000 }, () => {
  const found = [...blocks("README.md"), ...blocks("API.md")];
  assert.ok(found.length >= 4, `only ${found.length} blocks found`);
  const dir = path.join(root, ".doccheck");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir);
  try {
    found.forEach((code, i) => writeFileSync(path.join(dir, `block${i}.ts`), `${code}\nexport {};\n`));
    // The `ws` package ships no types (its @types package is not a
    // dependency): enough of it for the examples.
    writeFileSync(
      path.join(dir, "ws.d.ts"),
      'declare module "ws" { const WebSocket: import("switchboard-client").WebSocketConstructor; export default WebSocket; }\n',
    );
    writeFileSync(
      path.join(dir, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          module: "ES2022",
          moduleResolution: "bundler",
          lib: ["ES2022", "DOM"],
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          paths: { "switchboard-client": ["../src/index.ts"] },
        },
        include: ["*.ts"],
      }),
    );
    const tsc = path.join(root, "node_modules/typescript/bin/tsc");
    try {
      execFileSync(process.execPath, [tsc, "-p", dir], { encoding: "utf8" });
    } catch (error) {
      assert.fail(`the docs' examples do not compile:\n${error.stdout}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
