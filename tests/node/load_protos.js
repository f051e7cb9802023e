// Parses every loraplane .proto with @grpc/proto-loader and prints the services it finds, as JSON.
// Usage: node load_protos.js PROTO_ROOT GOOGLEAPIS_ROOT FILE...
const protoLoader = require("@grpc/proto-loader");
const grpc = require("@grpc/grpc-js");

const [protoRoot, googleRoot, ...files] = process.argv.slice(2);
const found = {};
for (const file of files) {
  const definition = protoLoader.loadSync(file, {
    includeDirs: [protoRoot, googleRoot],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const loaded = grpc.loadPackageDefinition(definition);
  // A service definition is an object of method definitions, each with a path and streaming flags.
  const isService = (def) => Object.values(def).some((m) => m && m.path && "requestStream" in m);
  found[file] = Object.keys(definition).filter((name) => name.startsWith("loraplane.") && isService(definition[name]));
  for (const name of found[file]) {
    const parts = name.split(".");
    let ctor = loaded;
    for (const p of parts) ctor = ctor[p];
    if (typeof ctor !== "function") throw new Error(`${name} is not a client constructor`);
  }
}
console.log(JSON.stringify(found));
