#!/usr/bin/env node
// Entry point installed as `kappa-k8s-tagger`; the bundle is built by `npm run build`.
import "../dist/main.js";
