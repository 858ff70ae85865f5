// Signs GitHub's example workflow_job deliveries with Octokit's own signer, for
// crates/hangar/tests/webhook_examples.rs.
//
//   node sign.mjs METHODS_DIR EXAMPLES_JSON SECRET WRONG_SECRET
//
// METHODS_DIR is the @octokit/webhooks-methods package folder, EXAMPLES_JSON the api.github.com
// index.json of @octokit/webhooks-examples. Prints one JSON object: the two packages' versions and,
// per workflow_job example, the body as GitHub would send it (the example as compact JSON), its
// X-Hub-Signature-256 with SECRET and with WRONG_SECRET.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";

const [methodsDir, examplesFile, secret, wrongSecret] = process.argv.slice(2);
if (!wrongSecret) {
  console.error("usage: node sign.mjs METHODS_DIR EXAMPLES_JSON SECRET WRONG_SECRET");
  process.exit(2);
}

const readJson = (file) => JSON.parse(readFileSync(file, "utf8"));
const methods = readJson(join(methodsDir, "package.json"));
const root = methods.exports?.["."];
const entry = root?.node?.import ?? root?.import ?? root?.default?.import ?? methods.main;
const { sign } = await import(pathToFileURL(join(methodsDir, entry)).href);

const examples = readJson(examplesFile).find((event) => event.name === "workflow_job");
if (!examples) {
  console.error(`${examplesFile} has no workflow_job examples`);
  process.exit(1);
}
const deliveries = [];
for (const example of examples.examples) {
  const body = JSON.stringify(example);
  deliveries.push({
    body,
    signature: await sign(secret, body),
    wrong_signature: await sign(wrongSecret, body),
  });
}
const examplesPackage = readJson(join(dirname(dirname(examplesFile)), "package.json"));
process.stdout.write(
  JSON.stringify({
    methods: `${methods.name}@${methods.version}`,
    examples: `${examplesPackage.name}@${examplesPackage.version}`,
    deliveries,
  }),
);
