#!/usr/bin/env node
// Entry point installed as `kappa-process-enricher`; the bundle is built by `npm run build`.
import "../dist/main.js";
