// A session-era agent on the TypeScript SDK (@modelcontextprotocol/sdk), driven by the end-to-end tests.
//   node ts_agent.mjs <url> <token> open <n>            open n sessions (initialize + tools/list), never close them;
//                                                       print {"opened": n} and stay until stdin closes
//   node ts_agent.mjs <url> <token> calls <n> <tool> <json-args>
//                                                       one session: list the tools, call <tool> n times; print
//                                                       {"tools": count, "ok": k, "errors": [...]}
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token, command, ...rest] = process.argv.slice(2);

async function connect() {
  const client = new Client({ name: "portcullis-ts-agent", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  await client.connect(transport);
  return client;
}

async function open(n) {
  const clients = [];
  for (let i = 0; i < n; i++) {
    const client = await connect();
    await client.listTools();
    clients.push(client); // never closed: the TypeScript SDK's close() sends no DELETE anyway
  }
  console.log(JSON.stringify({ opened: clients.length }));
  await new Promise((resolve) => process.stdin.on("close", resolve).resume());
  process.exit(0);
}

async function calls(n, tool, args) {
  const client = await connect();
  const tools = (await client.listTools()).tools.length;
  let ok = 0;
  const errors = [];
  for (let i = 0; i < n; i++) {
    try {
      const result = await client.callTool({ name: tool, arguments: args });
      if (result.isError) errors.push(JSON.stringify(result.content).slice(0, 300));
      else ok++;
    } catch (err) {
      errors.push(String(err).slice(0, 300));
    }
  }
  console.log(JSON.stringify({ tools, ok, errors }));
  process.exit(0);
}

if (command === "open") await open(Number(rest[0]));
else if (command === "calls") await calls(Number(rest[0]), rest[1], JSON.parse(rest[2] || "{}"));
else {
  console.error(`unknown command ${command}`);
  process.exit(2);
}
