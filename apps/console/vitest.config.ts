import { projectTestConfig } from '../../tools/vitest.shared.js';

export default projectTestConfig(import.meta.url);
