// The Vercel AI SDK (`ai` + `@ai-sdk/openai`) against Keel: `node ai_sdk.mjs <case>`; prints one JSON object.
// `openai.chat(model)` speaks chat completions; `openai(model)` (the default) the Responses API.
import { createOpenAI } from "@ai-sdk/openai";
import { embedMany, generateText, isStepCount, jsonSchema, Output, streamText, tool } from "ai";

const openai = createOpenAI({ baseURL: process.env.KEEL_BASE_URL, apiKey: process.env.KEEL_KEY });
const id = process.env.KEEL_MODEL;
const model = process.argv[3] === "responses" ? openai(id) : openai.chat(id);
const prompt = "hello from the ai sdk";

const cases = {
  async generate() {
    const r = await generateText({ model, prompt, maxRetries: 0 });
    return { text: r.text, finish: r.finishReason, usage: r.usage };
  },
  async stream() {
    const r = streamText({ model, prompt, maxRetries: 0, onError: () => {} });
    let text = "";
    for await (const part of r.textStream) text += part;
    return { text, finish: await r.finishReason, usage: await r.usage };
  },
  async tools() {
    const calls = [];
    const r = await generateText({
      model,
      prompt,
      maxRetries: 0,
      stopWhen: isStepCount(2),
      tools: {
        get_weather: tool({
          description: "Weather in a city",
          inputSchema: jsonSchema({
            type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false,
          }),
          execute: async (input) => {
            calls.push(input);
            return { temp: 21 };
          },
        }),
      },
    });
    return { text: r.text, steps: r.steps.length, calls, finish: r.finishReason };
  },
  async object() {
    const r = await generateText({
      model,
      prompt,
      maxRetries: 0,
      output: Output.object({
        schema: jsonSchema({
          type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false,
        }),
      }),
    });
    return { output: r.output };
  },
  async embed() {
    const r = await embedMany({ model: openai.embedding(id), values: ["one", "two"], maxRetries: 0 });
    return { count: r.embeddings.length, dims: r.embeddings[0].length };
  },
};

console.log(JSON.stringify(await cases[process.argv[2]]()));
