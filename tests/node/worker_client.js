// A Node.js client of the worker's Inference service: lists models, then streams one generation.
// Usage: node worker_client.js PROTO_ROOT TARGET MODEL PROMPT MAX_TOKENS
// Greedy, with ignore_eos, so the stream always runs to MAX_TOKENS whatever the model's weights.
// Prints one JSON object: {models: [...], messages: [kinds in order], text, finish_reason, usage, request_id}.
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [protoRoot, target, model, prompt, maxTokens] = process.argv.slice(2);
const definition = protoLoader.loadSync(path.join(protoRoot, "loraplane/inference/v1/inference.proto"), {
  includeDirs: [protoRoot],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { Inference } = grpc.loadPackageDefinition(definition).loraplane.inference.v1;
const client = new Inference(target, grpc.credentials.createInsecure());

function fail(err) {
  console.error(`${err.code}: ${err.details || err.message}`);
  process.exit(1);
}

client.ListModels({}, (err, listed) => {
  if (err) return fail(err);
  const result = { models: listed.models, messages: [], text: "", finish_reason: null, usage: null };
  const request = {
    model,
    text: prompt,
    sampling_params: { max_tokens: Number(maxTokens), temperature: 0, ignore_eos: true },
  };
  const call = client.Generate(request);
  call.on("data", (message) => {
    result.messages.push(message.response);
    if (message.response === "start") result.request_id = message.start.request_id;
    if (message.response === "chunk") {
      result.text += message.chunk.text;
      if (message.chunk.finish_reason !== "FINISH_REASON_UNSPECIFIED") result.finish_reason = message.chunk.finish_reason;
    }
    if (message.response === "usage") result.usage = message.usage;
  });
  call.on("error", fail);
  call.on("end", () => {
    console.log(JSON.stringify(result));
    client.close();
  });
});
