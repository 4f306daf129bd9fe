#!/usr/bin/env node
// Entry point installed as `kappa-console`; the bundle is built by `npm run build`.
import "../dist/main.js";
