// The Vercel AI SDK's default OpenAI model (the Responses API) against Keel: a tool loop, a stream, a
// structured object, and a second turn that names the first answer by `item_reference` (stored
// responses). Usage: node responses.mjs <base_url> <api_key> <alias>; prints one JSON line.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, isStepCount, jsonSchema, Output, streamText, tool } from "ai";

const [baseURL, apiKey, alias] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey });
const model = openai(alias); // the Responses API, the provider's default

const asked = [];
const tools = {
  get_weather: tool({
    description: "Weather in a city",
    inputSchema: jsonSchema({
      type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false,
    }),
    execute: async ({ city }) => {
      asked.push(city);
      return "sunny, 21 C";
    },
  }),
};
const loop = await generateText({ model, tools, prompt: "Weather in Paris?", stopWhen: isStepCount(3), maxRetries: 0 });
const streamed = streamText({ model, prompt: "hello there", maxRetries: 0 });
let text = "";
for await (const delta of streamed.textStream) text += delta;
const object = await generateText({
  model,
  prompt: "Weather in Paris as JSON",
  maxRetries: 0,
  output: Output.object({
    schema: jsonSchema({
      type: "object",
      properties: { city: { type: "string" }, celsius: { type: "number" } },
      required: ["city", "celsius"],
      additionalProperties: false,
    }),
  }),
});
const ask = { role: "user", content: "my name is Ada" };
const first = await generateText({ model, messages: [ask], maxRetries: 0 });
const messages = [ask, ...first.response.messages, { role: "user", content: "what is my name?" }];
const second = await generateText({ model, messages, maxRetries: 0 });
console.log(
  JSON.stringify({
    loop: { text: loop.text, steps: loop.steps.length, asked },
    stream: { text, usage: await streamed.usage },
    object: object.output,
    recall: second.text,
  }),
);
