#!/usr/bin/env node
// Entry point installed as `kappa-exporter`; the bundle is built by `npm run build`.
import "../dist/main.js";
