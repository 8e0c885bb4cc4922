// The official openai Node SDK against Keel: `node openai_sdk.mjs <case>`; prints one JSON object.
// KEEL_BASE_URL (…/v1), KEEL_KEY and KEEL_MODEL come from tests/e2e/test_node_clients.py.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.KEEL_BASE_URL, apiKey: process.env.KEEL_KEY, maxRetries: 0 });
const model = process.env.KEEL_MODEL;
const ask = [{ role: "user", content: "hello from node" }];
const weather = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

const cases = {
  async chat() {
    const r = await client.chat.completions.create({ model, messages: ask, max_tokens: 20 });
    return { content: r.choices[0].message.content, finish: r.choices[0].finish_reason, usage: r.usage };
  },
  async stream() {
    const s = await client.chat.completions.create({
      model, messages: ask, stream: true, stream_options: { include_usage: true },
    });
    let text = "", finish = null, usage = null;
    for await (const chunk of s) {
      if (chunk.choices.length) {
        text += chunk.choices[0].delta.content ?? "";
        finish = chunk.choices[0].finish_reason ?? finish;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    return { content: text, finish, usage };
  },
  async tools() {
    const first = await client.chat.completions.create({ model, messages: ask, tools: [weather] });
    const message = first.choices[0].message;
    const call = message.tool_calls[0];
    const second = await client.chat.completions.create({
      model,
      tools: [weather],
      messages: [...ask, message, { role: "tool", tool_call_id: call.id, content: '{"temp": 21}' }],
    });
    return {
      finish: first.choices[0].finish_reason,
      name: call.function.name,
      arguments: JSON.parse(call.function.arguments),
      content: second.choices[0].message.content,
    };
  },
  async embed() {
    // the Node SDK asks for base64 by default and decodes it back into floats
    const r = await client.embeddings.create({ model, input: ["one", "two"] });
    return { count: r.data.length, dims: r.data[0].embedding.length, first: r.data[0].embedding.slice(0, 3) };
  },
  async error() {
    try {
      await client.chat.completions.create({ model: "no-such-alias", messages: ask });
      return { status: null };
    } catch (err) {
      return { status: err.status, name: err.constructor.name, message: err.message };
    }
  },
};

console.log(JSON.stringify(await cases[process.argv[2]]()));
