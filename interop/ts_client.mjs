// The TypeScript SDK client against a running chittyos over Streamable HTTP.
//   node ts_client.mjs <url> <bearer token>
// Lists tools, runs one standard execution, reads it back with chitty_execution_status, and
// prints one JSON line with what it saw. Exits non-zero on any failure.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: "chittyos-ts-interop", version: "1.0.0" });
await client.connect(transport);
const tools = (await client.listTools()).tools.map((t) => t.name).sort();
const progress = [];
const executed = await client.callTool(
  { name: "chitty_secure_ai_execute", arguments: { prompt: "From TypeScript", user_id: "ts" } },
  undefined,
  { onprogress: (p) => progress.push(p) },
);
if (executed.isError) throw new Error(`execute failed: ${JSON.stringify(executed.content)}`);
const body = executed.structuredContent;
const status = await client.callTool({
  name: "chitty_execution_status",
  arguments: { execution_id: body.execution_id },
});
const bad = await client.callTool({ name: "chitty_secure_ai_execute", arguments: { prompt: "p" } });
await client.close();
console.log(
  JSON.stringify({
    server: client.getServerVersion(),
    tools,
    status: body.status,
    response: body.results.chatgpt_response,
    text_matches_structured: JSON.stringify(JSON.parse(executed.content[0].text)) === JSON.stringify(body),
    status_matches: JSON.stringify(status.structuredContent) === JSON.stringify(body),
    progress_notifications: progress.length,
    bad_input_is_error: bad.isError === true,
    bad_input_text: bad.content[0].text,
  }),
);
