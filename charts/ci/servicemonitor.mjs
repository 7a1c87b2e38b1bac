// Validates ServiceMonitors against the Prometheus Operator's schema: one JSON object per stdin line, one
// answer per stdout line (`ok`, or the errors). The models live in .cache/k8s-tools/node
// (.ci/install-k8s-tools.sh); MODELS overrides that directory.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const models = process.env.MODELS ?? join(here, "../../.cache/k8s-tools/node");
const file = join(models, "node_modules/@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js");
const { ServiceMonitor } = await import(pathToFileURL(file).href);

for (const line of readFileSync(0, "utf8").split("\n").filter(Boolean)) {
  try {
    new ServiceMonitor(JSON.parse(line)).validate();
    console.log("ok");
  } catch (e) {
    console.log(String(e.message ?? e).replace(/\s+/g, " "));
  }
}
